"""The webui's ENSD and randn_source in the starting noise (tiny tensors, CPU)."""

from __future__ import annotations

import numpy as np
import torch

from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.engine.noise import image_noise
from sdcore.engine.philox import PhiloxGenerator, philox4x32
from sdcore.ports import EngineInputs

from .support import Steps, gen


def test_ensd_reseeds_only_the_generator_the_sampler_goes_on_with() -> None:
    plain, plain_gen = image_noise((4, 8, 8), seed=5)
    ensd, ensd_gen = image_noise((4, 8, 8), seed=5, ensd=31337)
    assert torch.equal(plain, ensd)  # the picture's starting noise is the seed's
    later = torch.randn(3, generator=ensd_gen)
    assert torch.equal(later, torch.randn(3, generator=torch.Generator().manual_seed(31342)))
    assert not torch.equal(later, torch.randn(3, generator=plain_gen))


def test_noise_is_drawn_on_the_device_asked() -> None:
    noise, generator = image_noise((4, 8, 8), seed=5, device="cpu")
    assert noise.device.type == "cpu" and generator.device.type == "cpu"
    expected = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(5))
    assert torch.equal(noise, expected)


def _image(engine: DiffusersEngine, **params: object) -> np.ndarray:
    result = engine.run(gen(**params), EngineInputs(), Steps())
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16)


def test_ensd_changes_ancestral_samplers_only_and_is_recorded(engine: DiffusersEngine) -> None:
    plain = _image(engine, sampler="Euler a")
    assert not np.array_equal(plain, _image(engine, sampler="Euler a", eta_noise_seed_delta=31337))
    euler = _image(engine, sampler="Euler")
    assert np.array_equal(euler, _image(engine, sampler="Euler", eta_noise_seed_delta=31337))
    result = engine.run(
        gen(sampler="Euler a", eta_noise_seed_delta=31337, randn_source="CPU"),
        EngineInputs(),
        Steps(),
    )
    assert "ENSD: 31337, RNG: CPU" in result.infotexts[0]


def test_gpu_source_on_a_cpu_pipeline_is_the_cpu_noise(engine: DiffusersEngine) -> None:
    assert np.array_equal(_image(engine), _image(engine, randn_source="GPU"))


# --- randn_source NV: an NVIDIA GPU's torch.randn, drawn with numpy -----------------------------


def test_philox_matches_its_known_answer_vectors() -> None:
    zero, ones = np.zeros(1, np.uint32), np.full(1, 0xFFFFFFFF, np.uint32)
    words = philox4x32([zero] * 4, [zero] * 2)
    assert [int(w[0]) for w in words] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    words = philox4x32([ones] * 4, [ones] * 2)
    assert [int(w[0]) for w in words] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]


def test_nv_noise_is_cudas_randn_and_moves_on_per_call() -> None:
    # torch.manual_seed(0); torch.randn(3, 4, device="cuda") on an NVIDIA GPU
    cuda = [[-0.9247, -0.4253, -2.6438, 0.1452],
            [-0.1209, -0.5797, -0.6229, -0.3284],
            [-1.0745, -0.3631, -1.6711, 2.2655]]  # fmt: skip
    generator = PhiloxGenerator(0)
    first = generator.randn((3, 4))
    assert first.dtype == np.float32
    assert np.allclose(first, cuda, atol=1e-4)
    assert not np.allclose(generator.randn((3, 4)), first)  # the next call, the next offset
    noise, later = image_noise((4, 8, 8), seed=0, nv=True)
    assert np.allclose(noise.flatten()[:12].numpy(), np.array(cuda).flatten(), atol=1e-4)
    assert isinstance(later, PhiloxGenerator) and later.offset == 1


def test_nv_source_draws_the_start_and_the_sampler_noise(engine: DiffusersEngine) -> None:
    result = engine.run(gen(sampler="Euler a", randn_source="NV"), EngineInputs(), Steps())
    assert "RNG: NV" in result.infotexts[0]
    nv = np.asarray(result.images[0].convert("RGB"), dtype=np.int16)
    assert np.array_equal(nv, _image(engine, sampler="Euler a", randn_source="NV"))
    assert not np.array_equal(nv, _image(engine, sampler="Euler a", randn_source="CPU"))
    # the same start, other later noise: the ancestral steps draw from the Philox generator
    assert not np.array_equal(
        nv, _image(engine, sampler="Euler a", randn_source="NV", eta_noise_seed_delta=5)
    )
