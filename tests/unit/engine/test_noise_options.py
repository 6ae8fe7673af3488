"""The webui's ENSD and randn_source in the starting noise (tiny tensors, CPU)."""

from __future__ import annotations

import numpy as np
import torch

from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.engine.noise import image_noise
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
