"""Torch building blocks of the deep coders: the Gradient Snapping Layer, backbones, similarity
losses, augmentation and the shared training loop."""
from .augment import CropFlip
from .backbones import BACKBONES, MLP, L2Normalize, SmallCNN, build_backbone, image_shape_for
from .losses import LOSSES, ClassificationLoss, ContrastiveLoss, TripletLoss, build_loss
from .snapping import SNAP_MODES, Codebook, GradientSnapping, snap_gradient, snap_toward
from .trainer import EpochRecord, TrainConfig, TrainState, train_network

__all__ = [
    "CropFlip",
    "BACKBONES", "MLP", "L2Normalize", "SmallCNN", "build_backbone", "image_shape_for",
    "LOSSES", "ClassificationLoss", "ContrastiveLoss", "TripletLoss", "build_loss",
    "SNAP_MODES", "Codebook", "GradientSnapping", "snap_gradient", "snap_toward",
    "EpochRecord", "TrainConfig", "TrainState", "train_network",
]
