"""Indexes: exact search over learned codes (Hamming for binary codes, ADC for quantizer codes)."""
from .adc import ADCIndex
from .hamming import HammingIndex

__all__ = ["HammingIndex", "ADCIndex"]
