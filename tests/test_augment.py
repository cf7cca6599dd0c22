"""Views with recorded parameters: exact crops/flips, and moving a perturbation between views."""

import torch

from memloss.trainer.training.augment import ViewParams, align_delta, apply_view, identity_views, sample_views


def _manual_view(x: torch.Tensor, oy: int, ox: int, flip: bool, pad: int) -> torch.Tensor:
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[-2:]
    view = padded[:, oy:oy + h, ox:ox + w]
    return view.flip(-1) if flip else view


def test_apply_view_matches_manual_crop_and_flip() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 7, generator=g)
    params = sample_views(6, 2, True, g, torch.device("cpu"))
    out = apply_view(x, params, 2)
    for i in range(6):
        oy, ox = params.offset[i].tolist()
        assert torch.equal(out[i], _manual_view(x[i], oy, ox, bool(params.flip[i]), 2))


def test_identity_view_is_the_image_and_offsets_in_range() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 5, 5, generator=g)
    assert torch.equal(apply_view(x, identity_views(4, 3, x.device), 3), x)
    params = sample_views(1000, 4, False, g, torch.device("cpu"))
    assert params.offset.min() == 0 and params.offset.max() == 8 and not params.flip.any()


def test_align_delta_moves_perturbation_into_the_target_view() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(5, 2, 6, 6, generator=g)
    pad = 2
    src = sample_views(5, pad, True, g, torch.device("cpu"))
    dst = sample_views(5, pad, True, g, torch.device("cpu"))
    # A perturbation that is a fixed pattern on the padded canvas, seen through the source view.
    pattern = torch.rand(5, 2, 10, 10, generator=g)
    delta_src = apply_view(pattern[:, :, pad:-pad, pad:-pad], src, pad)  # zero outside the image
    moved = align_delta(delta_src, src, dst, pad)
    # Where both views see the same canvas pixel, the moved delta equals the pattern in the target view.
    canvas_src = torch.zeros(5, 2, 10, 10)
    canvas_src[:, :, pad:-pad, pad:-pad] = pattern[:, :, pad:-pad, pad:-pad]
    expected_full = apply_view(canvas_src[:, :, pad:-pad, pad:-pad], dst, pad)
    covered = align_delta(torch.ones_like(delta_src), src, dst, pad).bool()
    assert torch.allclose(moved[covered], expected_full[covered])
    assert (moved[~covered] == 0).all()
    # Aligning into the same view is the identity.
    assert torch.equal(align_delta(delta_src, src, src, pad), delta_src)


def test_view_params_to_device_keeps_values() -> None:
    p = ViewParams(torch.tensor([[1, 2]]), torch.tensor([True]))
    q = p.to(torch.device("cpu"))
    assert torch.equal(q.offset, p.offset) and torch.equal(q.flip, p.flip)
