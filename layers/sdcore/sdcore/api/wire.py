"""A task's recorded parameters in webui words, as the task listing and history show them."""

from __future__ import annotations

from typing import Any

from sdcore.domain.models import Task, TaskKind

_FACE_LABELS = ("GFPGAN", "CodeFormer")


def wire_parameters(task: Task) -> dict[str, Any]:
    """The request's parameters in webui words, as the task recorded them."""
    p = task.params
    if p.interrogate is not None:
        return {"stable_diffusion_model": task.model, "model": p.interrogate.method.value,
                "interrogator": p.interrogate.model}  # fmt: skip
    if p.kind is TaskKind.EXTRAS:
        return {
            "stable_diffusion_model": task.model,
            "upscaling_resize": p.upscale_factor,
            "upscaling_resize_w": p.upscale_width,
            "upscaling_resize_h": p.upscale_height,
            "upscaler_1": p.upscaler,
            "upscaling_crop": p.upscale_crop,
            "upscaler_2": p.upscaler_2,
            "extras_upscaler_2_visibility": p.upscaler_2_visibility,
            **{f"{n.lower()}_visibility": v for n, v in p.face_restorers if n in _FACE_LABELS},
            "codeformer_weight": p.codeformer_weight,
        }
    out: dict[str, Any] = {
        "stable_diffusion_model": task.model,
        "sd_vae": p.vae,
        "prompt": p.prompt,
        "negative_prompt": p.negative_prompt,
        "seed": p.seed,
        "steps": p.steps,
        "cfg_scale": p.guidance,
        "width": p.width,
        "height": p.height,
        "sampler_name": p.sampler,
        "scheduler": p.scheduler,
        "subseed": p.subseed,
        "subseed_strength": p.subseed_strength,
        "seed_resize_from_w": p.seed_resize_from_w or -1,
        "seed_resize_from_h": p.seed_resize_from_h or -1,
        "clip_skip": p.clip_skip,
        "tiling": p.tiling,
        "restore_faces": bool(p.face_restorers),
        "batch_size": p.batch_size,
        "n_iter": p.batches,
    }
    if p.hires:
        out.update(
            enable_hr=True,
            hr_scale=p.hr_scale,
            hr_resize_x=p.hr_resize_x,
            hr_resize_y=p.hr_resize_y,
            hr_upscaler=p.hr_upscaler,
            hr_second_pass_steps=p.hr_second_pass_steps,
            hr_sampler_name=p.hr_sampler or None,
            hr_scheduler=p.hr_scheduler or None,
            hr_prompt=p.hr_prompt,
            hr_negative_prompt=p.hr_negative_prompt,
            denoising_strength=p.denoising_strength,
        )
    if p.original_prompt is not None or p.original_negative_prompt is not None:
        # the prompts above are the translation (`translate`) of these
        out.update(original_prompt=p.original_prompt,
                   original_negative_prompt=p.original_negative_prompt)  # fmt: skip
    if p.script is not None:  # its plan (jobs, grids) is in the task's params
        out["script_name"] = p.script.name
    if p.kind is TaskKind.IMG2IMG:
        out.update(
            denoising_strength=p.denoising_strength,
            init_images=p.init_images,
            mask=p.mask,
            mask_blur=p.mask_blur,
            inpainting_mask_invert=int(p.inpainting_mask_invert),
            resize_mode=p.resize_mode,
            inpainting_fill=p.inpainting_fill,
            inpaint_full_res=p.inpaint_full_res,
            inpaint_full_res_padding=p.inpaint_full_res_padding,
        )
    if p.remove is not None:  # POST /edits/remove: its photo, and its mask recipe for mask_blur
        r = p.remove
        for name in ("init_images", "mask", "mask_blur", "inpainting_mask_invert"):
            out.pop(name, None)
        out.update(image=p.init_images[0] if p.init_images else None, target=r.target,
                   segmenter=r.segmenter, maskMode=r.mask_mode.value, dilate=r.dilate,
                   blur=r.blur, threshold=r.threshold)  # fmt: skip
    return out
