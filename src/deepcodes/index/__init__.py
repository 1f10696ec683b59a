"""Indexes over learned codes, all on one contract (:class:`~deepcodes.index.base.CodeIndex`): exact
Hamming (linear scan and multi-index hashing), exact ADC, and the inverted-file indexes IVF-ADC and
VLQ-ADC for large collections."""
from .adc import ADCIndex
from .fastscan import FastScanIndex
from .base import CodeIndex
from .hamming import HammingIndex
from .ivfadc import IVFADCIndex
from .mih import MultiIndexHashing
from .vlq import VLQIndex
from .vlq_fastscan import VLQFastScanIndex

__all__ = ["CodeIndex", "HammingIndex", "ADCIndex", "FastScanIndex", "MultiIndexHashing", "IVFADCIndex", "VLQIndex",
           "VLQFastScanIndex"]
