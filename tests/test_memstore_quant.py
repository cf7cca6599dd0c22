"""quantize/dequantize: error bound, exact points, rejection of bad perturbations."""

import pytest
import torch

from memloss.errors import MemlossError
from memloss.memstore.quant import dequantize, quantize


def test_round_trip_error_is_at_most_scale_over_254() -> None:
    g = torch.Generator().manual_seed(0)
    delta = (torch.rand(64, 3, 8, 8, generator=g) * 2 - 1) * torch.rand(64, 1, 1, 1, generator=g)
    codes, scale = quantize(delta)
    assert codes.dtype == torch.uint8 and scale.dtype == torch.float32 and scale.shape == (64,)
    assert int(codes.min()) >= 1 and int(codes.max()) <= 255
    err = (dequantize(codes, scale) - delta).abs().amax(dim=(1, 2, 3))
    assert bool((err <= scale / 254 * (1 + 1e-5) + 1e-12).all())


def test_zero_and_plus_minus_scale_are_exact() -> None:
    delta = torch.zeros(2, 5)
    delta[0] = torch.tensor([0.0, 0.03, -0.03, 0.01, -0.02])
    delta[1] = torch.tensor([8 / 255, -8 / 255, 0.0, 8 / 255, 0.001])
    codes, scale = quantize(delta)
    back = dequantize(codes, scale)
    for b in range(2):
        exact = (delta[b] == 0) | (delta[b].abs() == scale[b])
        assert torch.equal(back[b][exact], delta[b][exact])


def test_zero_sample_gives_all_codes_128_and_scale_0() -> None:
    codes, scale = quantize(torch.zeros(3, 2, 2))
    assert bool((codes == 128).all()) and bool((scale == 0).all())
    assert bool((dequantize(codes, scale) == 0).all())


def test_dequantize_accepts_leading_memory_dim() -> None:
    delta = torch.randn(4, 3, 2, 2)
    codes, scale = quantize(delta)
    stacked = dequantize(torch.stack([codes, codes]), torch.stack([scale, scale]))
    assert stacked.shape == (2, 4, 3, 2, 2)
    assert torch.allclose(stacked[1], dequantize(codes, scale))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_are_rejected(bad: float) -> None:
    delta = torch.zeros(2, 4)
    delta[1, 2] = bad
    with pytest.raises(MemlossError, match="NaN or Inf"):
        quantize(delta)


def test_eps_check_linf() -> None:
    eps = 8 / 255
    ok = torch.full((2, 4), eps) * torch.tensor([1.0, -1.0, 0.5, 1.0 + 5e-7])
    quantize(ok, eps=eps, norm="Linf")
    with pytest.raises(MemlossError, match="exceeds eps"):
        quantize(ok * 1.001, eps=eps, norm="Linf")


def test_eps_check_l2() -> None:
    delta = torch.tensor([[0.3, 0.4]])  # L2 norm 0.5, Linf 0.4
    quantize(delta, eps=0.5, norm="L2")
    with pytest.raises(MemlossError, match="L2"):
        quantize(delta, eps=0.45, norm="L2")


def test_integer_input_rejected() -> None:
    with pytest.raises(MemlossError, match="float"):
        quantize(torch.zeros(2, 3, dtype=torch.int64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda() -> None:
    delta = torch.randn(8, 3, 4, 4, device="cuda")
    codes, scale = quantize(delta)
    assert codes.device.type == "cuda"
    assert torch.allclose(dequantize(codes, scale).cpu(), dequantize(codes.cpu(), scale.cpu()))
