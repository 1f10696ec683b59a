"""Torch building blocks of the deep coders: the Gradient Snapping Layer, backbones, similarity
losses and the shared training loop."""
from .backbones import BACKBONES, MLP, SmallCNN, build_backbone, image_shape_for
from .losses import LOSSES, ClassificationLoss, ContrastiveLoss, TripletLoss, build_loss
from .snapping import SNAP_MODES, Codebook, GradientSnapping, snap_gradient, snap_toward
from .trainer import train_network

__all__ = [
    "BACKBONES", "MLP", "SmallCNN", "build_backbone", "image_shape_for",
    "LOSSES", "ClassificationLoss", "ContrastiveLoss", "TripletLoss", "build_loss",
    "SNAP_MODES", "Codebook", "GradientSnapping", "snap_gradient", "snap_toward",
    "train_network",
]
