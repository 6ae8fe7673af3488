"""Install step: the test photo, scikit-image's astronaut (`skimage/data/astronaut.png`, NASA,
public domain), taken out of the scikit-image wheel fetched through the package registry with
pip and checked by SHA-256; scikit-image itself is not installed. Run by `make install`
(`python tests/data/fetch_photos.py`).

`astronaut_person_mask.png` beside it is the reference person mask the segmenter tests score
against: the polygon `PERSON` below, drawn by hand on a 32 px grid over the photo (the person
with the helmet she holds, as a removal should take it away), filled and saved as a 1-bit PNG."""

from __future__ import annotations

from pathlib import Path

from sdcore.engine.face_detector_model import fetch as fetch_member

HERE = Path(__file__).parent
ASTRONAUT = HERE / "astronaut.png"
ASTRONAUT_SHA256 = "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"
PERSON_MASK = HERE / "astronaut_person_mask.png"
WHEEL = "scikit-image==0.26.0"
MEMBER = "skimage/data/astronaut.png"
# the reference mask's outline, (x, y) on the 512x512 photo
PERSON = [(228, 14), (262, 20), (290, 40), (302, 70), (300, 100), (292, 125), (282, 150),
          (298, 185), (306, 215), (318, 245), (340, 262), (355, 285), (362, 320), (365, 348),
          (395, 343), (440, 352), (478, 380), (498, 420), (508, 465), (511, 511), (18, 511),
          (16, 470), (20, 410), (24, 350), (34, 300), (55, 262), (85, 240), (115, 222),
          (113, 190), (128, 165), (160, 150), (158, 122), (152, 92), (155, 60), (170, 34),
          (198, 18)]  # fmt: skip


def fetch() -> Path:
    """The astronaut photo, fetched once."""
    fetch_member(MEMBER, ASTRONAUT, ASTRONAUT_SHA256, WHEEL)
    return ASTRONAUT


if __name__ == "__main__":
    fetch()
