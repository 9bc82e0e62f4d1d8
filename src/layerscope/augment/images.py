"""Image views for the invariance metrics of vision models: random resized crops (SPEC section 7.8).

A view crops a random box (area a uniform fraction ``scale`` of the image, aspect ratio log-uniform
in ``ratio``, position uniform) and resizes it back to the full size, as torchvision's
``RandomResizedCrop`` does, with an optional horizontal flip. All crops of all images and views are
one batched ``affine_grid`` + ``grid_sample`` call (bilinear): no loop over images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from layerscope.errors import LayerscopeError

__all__ = ["random_resized_crops"]


def random_resized_crops(
    pixels: torch.Tensor,
    n_views: int,
    seed: int = 0,
    scale: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> torch.Tensor:
    """``n_views`` random resized crops of every image.

    Parameters
    ----------
    pixels : Tensor, shape (N, C, H, W)
        Prepared images (see :func:`layerscope.extract.prepare_images`).
    n_views : int
        Views per image (2 for InfoNCE and DiME, 16 for LiDAR).
    seed : int
        Seeds the draws: the same seed gives the same views.
    scale : (float, float)
        Range of the crop's area as a fraction of the image's, within (0, 1].
    ratio : (float, float)
        Range of the crop's width / height (drawn log-uniformly); clipped so the box fits.
    flip : bool
        Mirror each view horizontally with probability 1/2.

    Returns
    -------
    Tensor, shape (n_views, N, C, H, W)
        ``scale=(1, 1), ratio=(1, 1), flip=False`` returns the images unchanged (up to rounding).
    """
    if pixels.ndim != 4:
        raise LayerscopeError(f"pixels must be (N, C, H, W), got shape {tuple(pixels.shape)}")
    if int(n_views) < 1:
        raise LayerscopeError(f"n_views must be >= 1, got {n_views}")
    if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
        raise LayerscopeError(f"crop scale must satisfy 0 < low <= high <= 1 and ratio 0 < low <= high, got {scale}, {ratio}")
    n, channels, height, width = pixels.shape
    count = int(n_views) * n
    generator = torch.Generator().manual_seed(int(seed))
    area = torch.empty(count, dtype=torch.float64).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(count, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                                 generator=generator)
    aspect = log_ratio.exp() * (height / width)  # in normalized units, a square box has aspect H / W
    # box size as fractions of the image side, clipped into the image
    box_w = (area * aspect).sqrt().clamp(max=1.0)
    box_h = (area / aspect).sqrt().clamp(max=1.0)
    centre_x = (torch.rand(count, generator=generator, dtype=torch.float64) * (1 - box_w) + box_w / 2) * 2 - 1
    centre_y = (torch.rand(count, generator=generator, dtype=torch.float64) * (1 - box_h) + box_h / 2) * 2 - 1
    mirror = torch.where(torch.rand(count, generator=generator) < 0.5, -1.0, 1.0).double() if flip \
        else torch.ones(count, dtype=torch.float64)
    # affine_grid maps output coordinates in [-1, 1] to input coordinates: x_in = w * m * x_out + c_x
    theta = torch.zeros(count, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = box_w * mirror
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = box_h
    theta[:, 1, 2] = centre_y
    source = pixels.unsqueeze(0).expand(int(n_views), -1, -1, -1, -1).reshape(count, channels, height, width)
    grid = F.affine_grid(theta.to(pixels.dtype), [count, channels, height, width], align_corners=False)
    views = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return views.reshape(int(n_views), n, channels, height, width)
