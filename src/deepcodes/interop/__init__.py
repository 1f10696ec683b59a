"""Bridges to other libraries' index formats."""
