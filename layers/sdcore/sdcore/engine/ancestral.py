"""The samplers that add fresh noise as they go, with the webui's `eta` and `s_noise`.

k-diffusion's ancestral step from sigma to sigma_next goes down to sigma_down and adds noise of
sigma_up, where `eta` scales sigma_up (`get_ancestral_step`: 0 is the deterministic solver, 1 the
full ancestral step); the SDE solvers weigh the same way between their ODE (eta 0) and SDE
(eta 1) forms; `s_noise` multiplies the fresh noise. diffusers' ports hard-code both at 1, so
each has a small subclass here whose arithmetic at eta 1 and s_noise 1 is diffusers' own
(today's pixels); `make_scheduler` sets `eta` and `s_noise` on the samplers the webui gives
them to (`sdcore.webui.infotext.ETA_SAMPLERS`, `SIGMA_NOISE_SAMPLERS`).

- Euler a, DPM2 a, DPM++ SDE: diffusers' schedulers with eta in sigma_up (and s_noise on the
  noise of DPM2 a and DPM++ SDE; the webui gives Euler a no s_noise).
- DPM++ 2M SDE (and Heun), DPM++ 3M SDE: diffusers' SDE DPM-Solver++ updates as k-diffusion's
  `sample_dpmpp_2m_sde` / `sample_dpmpp_3m_sde` write them with eta: the sample decays by
  exp(-eta h) more, the prediction's weight is 1 - exp(-(1 + eta) h), the noise's
  sqrt(1 - exp(-2 eta h)).
- DPM++ 2S a has no diffusers port: `DPMpp2SAncestral` is k-diffusion's
  `sample_dpmpp_2s_ancestral` on Euler's sigma schedules: each step evaluates the model at
  sigma and at the log-space midpoint towards sigma_down, then adds noise of sigma_up; the
  last step (to sigma 0) is Euler's.
- DPM fast and DPM adaptive take them in `sdcore.engine.k_samplers`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
)
from diffusers.schedulers.scheduling_dpmsolver_sde import (
    BrownianTreeNoiseSampler,
    DPMSolverSDESchedulerOutput,
)
from diffusers.schedulers.scheduling_euler_ancestral_discrete import (
    EulerAncestralDiscreteSchedulerOutput,
)
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteSchedulerOutput

from sdcore.engine.philox import randn_tensor


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """k-diffusion's `get_ancestral_step`: (sigma_down, sigma_up) from `sigma` to `sigma_next`."""
    if not eta:
        return sigma_next, 0.0
    up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    return (sigma_next**2 - up**2) ** 0.5, up


def _denoised(base: Any, out: torch.Tensor, work: torch.Tensor, sigma: Any) -> torch.Tensor:
    if base.config.prediction_type == "v_prediction":
        return out * (-sigma / (sigma**2 + 1) ** 0.5) + work / (sigma**2 + 1)
    return work - sigma * out


class EulerAncestral(EulerAncestralDiscreteScheduler):
    """diffusers' Euler a with `eta` (k-diffusion's `sample_euler_ancestral`)."""

    eta = 1.0

    def step(  # type: ignore[override]
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        base: Any = self  # diffusers' attributes are set dynamically: untyped for mypy
        if base.step_index is None:
            base._init_step_index(timestep)
        index = int(base.step_index)
        sigma, sigma_to = base.sigmas[index], base.sigmas[index + 1]
        sample = sample.to(torch.float32)
        denoised = _denoised(base, model_output, sample, sigma)
        sigma_up = (sigma_to**2 * (sigma**2 - sigma_to**2) / sigma**2) ** 0.5
        if self.eta != 1:  # (at 1 the min is a no-op: diffusers leaves it out)
            sigma_up = torch.minimum(sigma_to, self.eta * sigma_up)
        sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
        prev = sample + (sample - denoised) / sigma * (sigma_down - sigma)
        noise = randn_tensor(
            model_output.shape, dtype=model_output.dtype, device=model_output.device,
            generator=generator,
        )  # fmt: skip
        prev = (prev + noise * sigma_up).to(model_output.dtype)
        base._step_index = index + 1
        if not return_dict:
            return (prev, denoised)
        return EulerAncestralDiscreteSchedulerOutput(
            prev_sample=prev, pred_original_sample=denoised
        )


class DPM2Ancestral(KDPM2AncestralDiscreteScheduler):
    """diffusers' DPM2 a with `eta` and `s_noise` (k-diffusion's `sample_dpm_2_ancestral`): the
    step's sigma_down and sigma_up, the midpoint between sigma and sigma_down and its timestep
    are re-planned for eta; sigma_up only scales the noise, so it carries s_noise."""

    eta = 1.0
    s_noise = 1.0

    def set_timesteps(
        self, num_inference_steps: int, device: Any = None, num_train_timesteps: Any = None
    ) -> None:
        super().set_timesteps(num_inference_steps, device, num_train_timesteps)  # type: ignore[misc]
        if self.eta == 1 and self.s_noise == 1:
            return
        base: Any = self  # diffusers' attributes are set dynamically: untyped for mypy
        sigmas = torch.cat([base.sigmas[:1], base.sigmas[1:-1:2]])  # the step sigmas, then 0
        nxt = torch.cat([sigmas[1:], sigmas[-1:] * 0])
        up = (nxt**2 * (sigmas**2 - nxt**2) / sigmas**2) ** 0.5
        up = torch.minimum(nxt, self.eta * up) if self.eta else torch.zeros_like(up)
        down = (nxt**2 - up**2) ** 0.5
        down[-1] = 0.0
        mid = sigmas.log().lerp(down.log(), 0.5).exp()
        mid[-2:] = 0.0
        up = up * self.s_noise

        def interleave(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x[:1], x[1:].repeat_interleave(2), x[-1:]])

        base.sigmas_interpol, base.sigmas_up, base.sigmas_down = map(interleave, (mid, up, down))
        steps = base.timesteps[::2]
        log_sigmas = base.log_sigmas.cpu()
        t_mid = np.array([base._sigma_to_t(s, log_sigmas) for s in mid.cpu()])
        t_mid_ = torch.from_numpy(t_mid).to(steps.device, dtype=steps.dtype)
        pairs = torch.stack((t_mid_[:-2, None], steps[1:, None]), dim=-1).flatten()
        base.timesteps = torch.cat([steps[:1], pairs])


class DPMppSDE(DPMSolverSDEScheduler):
    """diffusers' DPM++ SDE with `eta` and `s_noise` (k-diffusion's `sample_dpmpp_sde`, r 1/2):
    both half steps are ancestral steps at eta; the Brownian-tree noise is the same."""

    eta = 1.0
    s_noise = 1.0

    def step(  # type: ignore[override]
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        return_dict: bool = True,
        s_noise: float = 1.0,
    ) -> Any:
        if self.eta == 1:
            return super().step(model_output, timestep, sample, return_dict, self.s_noise)  # type: ignore[misc]
        base: Any = self  # diffusers' attributes are set dynamically: untyped for mypy
        if base.step_index is None:
            base._init_step_index(timestep)
        index = int(base.step_index)
        if base.noise_sampler is None:  # as diffusers starts it
            low, high = base.sigmas[base.sigmas > 0].min(), base.sigmas.max()
            base.noise_sampler = BrownianTreeNoiseSampler(
                sample, low.item(), high.item(), base.noise_sampler_seed
            )
        first = base.state_in_first_order
        sigma, sigma_next = base.sigmas[index], base.sigmas[index + 1]
        if not first:
            sigma, sigma_next = base.sigmas[index - 1], base.sigmas[index]
        t, t_next = -sigma.log(), -sigma_next.log()
        t_mid = t + (t_next - t) * 0.5
        denoised = _denoised(base, model_output, sample, sigma if first else (-t_mid).exp())
        if sigma_next == 0:
            prev = sample + (sample - denoised) / sigma * (sigma_next - sigma)
        else:
            if first:
                t_next = t_mid
            else:
                sample = base.sample
            # the Brownian path is queried at diffusers' times (it moves by ~sqrt(dt))
            start, to = (-t).exp(), (-t_next).exp()
            down, up = ancestral_step(float(start), float(to), self.eta)
            prev = (down / start) * sample - torch.expm1(t + math.log(down)) * denoised
            prev = prev + base.noise_sampler(start, to) * self.s_noise * up
            base.sample, base.mid_point_sigma = (sample, to) if first else (None, None)
        base._step_index = index + 1
        if not return_dict:
            return (prev, denoised)
        return DPMSolverSDESchedulerOutput(prev_sample=prev, pred_original_sample=denoised)


class DPMppMultistepSDE(DPMSolverMultistepScheduler):
    """diffusers' SDE DPM-Solver++ (first and second order) with `eta` and `s_noise`, as
    k-diffusion's `sample_dpmpp_2m_sde` writes them (at eta 1, diffusers' formulas)."""

    eta = 1.0
    s_noise = 1.0

    def _terms(self) -> tuple[Any, Any, Any, Any, Any]:
        """The step's alpha_t, sigma_t, sigma_s, h, and eta * h."""
        base: Any = self  # diffusers' attributes are set dynamically: untyped for mypy
        index = int(base.step_index)
        alpha_t, sigma_t = base._sigma_to_alpha_sigma_t(base.sigmas[index + 1])
        alpha_s, sigma_s = base._sigma_to_alpha_sigma_t(base.sigmas[index])
        h = (torch.log(alpha_t) - torch.log(sigma_t)) - (torch.log(alpha_s) - torch.log(sigma_s))
        eta_h = h * self.eta if self.eta else torch.zeros_like(h)  # (h is inf at sigma 0)
        return alpha_t, sigma_t, sigma_s, h, eta_h

    def _noise(self, sigma_t: Any, eta_h: Any, noise: Any) -> Any:
        return sigma_t * torch.sqrt(1.0 - torch.exp(-2.0 * eta_h)) * noise * self.s_noise

    def dpm_solver_first_order_update(  # type: ignore[override]
        self, model_output: torch.Tensor, *args: Any, sample: Any = None, noise: Any = None,
        **kwargs: Any,
    ) -> torch.Tensor:  # fmt: skip
        alpha_t, sigma_t, sigma_s, h, eta_h = self._terms()
        return (  # type: ignore[no-any-return]
            (sigma_t / sigma_s * torch.exp(-eta_h)) * sample
            + (alpha_t * (1 - torch.exp(-(h + eta_h)))) * model_output
            + self._noise(sigma_t, eta_h, noise)
        )

    def multistep_dpm_solver_second_order_update(  # type: ignore[override]
        self, model_output_list: list[torch.Tensor], *args: Any, sample: Any = None,
        noise: Any = None, **kwargs: Any,
    ) -> torch.Tensor:  # fmt: skip
        alpha_t, sigma_t, sigma_s0, h, eta_h = self._terms()
        base: Any = self
        index = int(base.step_index)
        alpha_s1, sigma_s1 = base._sigma_to_alpha_sigma_t(base.sigmas[index - 1])
        alpha_s0, _ = base._sigma_to_alpha_sigma_t(base.sigmas[index])
        h_0 = (torch.log(alpha_s0) - torch.log(sigma_s0)) - (
            torch.log(alpha_s1) - torch.log(sigma_s1)
        )
        m0, m1 = model_output_list[-1], model_output_list[-2]
        d1 = (1.0 / (h_0 / h)) * (m0 - m1)
        h_eta = h + eta_h
        if base.config.solver_type == "midpoint":
            second = 0.5 * (alpha_t * (1 - torch.exp(-h_eta))) * d1
        else:
            second = (alpha_t * ((1.0 - torch.exp(-h_eta)) / (-h_eta) + 1.0)) * d1
        return (  # type: ignore[no-any-return]
            (sigma_t / sigma_s0 * torch.exp(-eta_h)) * sample
            + (alpha_t * (1 - torch.exp(-h_eta))) * m0
            + second
            + self._noise(sigma_t, eta_h, noise)
        )


class DPMpp3MSDE(DPMppMultistepSDE):
    """DPM++ 3M SDE on the webui's sigmas: one more step planned, the next-to-last one dropped.
    Its third-order update is k-diffusion's: diffusers 0.42's SDE variant adds the second
    difference with the opposite sign of the 0.5 in phi_3 (its ODE variant agrees with
    k-diffusion)."""

    def multistep_dpm_solver_third_order_update(  # type: ignore[override]
        self, model_output_list: list[torch.Tensor], *, sample: torch.Tensor, noise: Any = None
    ) -> torch.Tensor:
        base: Any = self  # diffusers' attributes are set dynamically: untyped for mypy
        index = int(base.step_index)
        pairs = [base._sigma_to_alpha_sigma_t(base.sigmas[index + k]) for k in (1, 0, -1, -2)]
        (alpha_t, sigma_t), (_, sigma_s0) = pairs[0], pairs[1]
        lambdas = [torch.log(a) - torch.log(s) for a, s in pairs]
        h, h_0, h_1 = lambdas[0] - lambdas[1], lambdas[1] - lambdas[2], lambdas[2] - lambdas[3]
        eta_h = h * self.eta if self.eta else torch.zeros_like(h)
        h_eta = h + eta_h  # (at eta 1: 2 h)
        r0, r1 = h_0 / h, h_1 / h
        m0, m1, m2 = model_output_list[-1], model_output_list[-2], model_output_list[-3]
        d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
        d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi_2 = torch.expm1(-h_eta) / h_eta + 1.0
        phi_3 = phi_2 / h_eta - 0.5
        return (  # type: ignore[no-any-return]
            (sigma_t / sigma_s0 * torch.exp(-eta_h)) * sample
            - alpha_t * torch.expm1(-h_eta) * m0
            + alpha_t * (phi_2 * d1 - phi_3 * d2)
            + sigma_t * torch.sqrt(-torch.expm1(-2.0 * eta_h)) * noise * self.s_noise
        )

    def set_timesteps(self, num_inference_steps: int, device: Any = None, **kwargs: Any) -> None:
        super().set_timesteps(num_inference_steps + 1, device, **kwargs)  # type: ignore[misc]
        base: Any = self  # diffusers' attributes are set dynamically: untyped for mypy
        base.sigmas = torch.cat([base.sigmas[:-2], base.sigmas[-1:]])
        base.timesteps = base.timesteps[:-1]
        base.num_inference_steps = num_inference_steps


class DPMpp2SAncestral(EulerDiscreteScheduler):
    """k-diffusion's DPM-Solver++(2S) ancestral sampler. Two model evaluations per step but the
    last, so `timesteps` interleaves each step's sigma with its midpoint (`order` 2 keeps
    img2img's step slicing on step boundaries, as for Heun)."""

    order = 2
    eta = 1.0
    s_noise = 1.0

    def set_timesteps(self, num_inference_steps: int, device: Any = None, **kwargs: Any) -> None:
        super().set_timesteps(num_inference_steps, device)  # type: ignore[misc]
        base: Any = self  # diffusers' attributes are set dynamically: untyped for mypy
        sigmas = [float(x) for x in base.sigmas]  # the step sigmas, ending with 0
        # (sigma, sigma_down, sigma_up, sigma_next) per step; eval -> (step, first stage)
        self._plan: list[tuple[float, float, float, float]] = []
        self._stage: list[tuple[int, bool]] = []
        evals: list[float] = []
        for i, (sigma, nxt) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
            down, up = ancestral_step(sigma, nxt, self.eta)
            self._plan.append((sigma, down, up, nxt))
            evals.append(sigma)
            self._stage.append((i, True))
            if down > 0:
                evals.append(math.sqrt(sigma * down))  # exp(-(t + h/2)) with t = -log(sigma)
                self._stage.append((i, False))
        alphas = base.alphas_cumprod.numpy()
        log_sigmas = np.log(((1 - alphas) / alphas) ** 0.5)
        steps = base._sigma_to_t(np.array(evals), log_sigmas)
        self.timesteps = torch.from_numpy(steps.astype(np.float32)).to(device=device)
        self.sigmas = torch.tensor([*evals, 0.0], dtype=torch.float32)
        self.num_inference_steps = num_inference_steps
        self._x: torch.Tensor | None = None
        base._step_index = None
        base._begin_index = None

    def step(  # type: ignore[override]
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        base: Any = self  # diffusers' attributes are set dynamically: untyped for mypy
        if base.step_index is None:
            base._init_step_index(timestep)
        index = int(base.step_index)
        sigma = float(base.sigmas[index])
        work = sample.to(torch.float32)
        denoised = _denoised(base, model_output.to(torch.float32), work, sigma)
        step, first = self._stage[index]
        sigma_i, down, up, nxt = self._plan[step]
        if first and down == 0:  # the last step: Euler to sigma 0
            x = denoised
        elif first:  # half a step in log-sigma towards sigma_down
            self._x = work
            h = math.log(sigma_i) - math.log(down)
            x = (math.sqrt(sigma_i * down) / sigma_i) * work - math.expm1(-h / 2) * denoised
        else:  # the full step with the midpoint's prediction, then the ancestral noise
            assert self._x is not None
            h = math.log(sigma_i) - math.log(down)
            x = (down / sigma_i) * self._x - math.expm1(-h) * denoised
            if nxt > 0:
                noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = x + noise * self.s_noise * up
        base._step_index = index + 1
        prev = x.to(model_output.dtype)
        if not return_dict:
            return (prev, denoised)
        return EulerDiscreteSchedulerOutput(prev_sample=prev, pred_original_sample=denoised)
