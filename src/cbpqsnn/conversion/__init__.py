"""ANN-to-SNN conversion with calibration (Li et al., ICML 2021): the network that runs as the ANN
or as the converted SNN, BN folding, threshold search, bias / potential calibration, rescaling."""

from cbpqsnn.conversion.calibrate import (
    analog_means,
    bias_correction,
    channel_mean,
    potential_correction,
    rescale_to_unit_thresholds,
    set_simulation_length,
    spiking_means,
)
from cbpqsnn.conversion.convert import LEVELS, ConversionResult, ConversionSettings, convert, set_thresholds
from cbpqsnn.conversion.fold import fold_batch_norm, fold_batch_norms
from cbpqsnn.conversion.network import ConvertibleNet, build_convertible_net
from cbpqsnn.conversion.threshold import ThresholdGrid, ThresholdTracker, clip_floor, search_threshold

__all__ = [
    "LEVELS", "ConversionResult", "ConversionSettings", "ConvertibleNet", "ThresholdGrid",
    "ThresholdTracker", "analog_means", "bias_correction", "build_convertible_net", "channel_mean",
    "clip_floor", "convert", "fold_batch_norm", "fold_batch_norms", "potential_correction",
    "rescale_to_unit_thresholds", "search_threshold", "set_simulation_length", "set_thresholds",
    "spiking_means",
]
