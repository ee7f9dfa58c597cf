"""A bad photo inside a product names itself: the product's row is the manifest's, so a detail
such as "truncated JPEG" alone would not say which of the folder's photos to fix.

The engine marks the image error of photo ``i`` with ``photo_index`` (``CardEngine.
card_for_photos``) and the worker puts that photo's key first in the row's detail
(``services/inference/worker/job.py``); a photo the worker cannot fetch (over the byte limit)
is named the same way.
"""

from __future__ import annotations

import asyncio
import secrets
from types import SimpleNamespace
from typing import Any

import pytest

from schemas.messages import CardResult, CardStatus, ImageJob, ObjectRef
from schemas.products import ProductSpec
from services.inference.card.errors import (
    CardError,
    EmptyImage,
    ImageError,
    InvalidOutput,
)
from services.inference.image.preprocess import EncoderInput, ImageLimits
from services.inference.settings import EngineSettings
from services.inference.worker.job import JobHandler
from services.runtime.s3 import ObjectTooLarge
from tests.support import hostile_corpus as hostile
from tests.support.delivery_runs import settings
from tests.support.messages import make_ref

FOLDER = "shop-42/123/"
PHOTOS = [FOLDER + name for name in ("front.jpg", "back.jpg", "label.jpg")]


class StandIn:
    """An engine that fails the way it is told to: ``photos`` raises ``error`` (with
    ``photo_index`` when given), ``one`` raises ``error`` for a single photo."""

    model_id = "stand-in"
    prompt = SimpleNamespace(version="test")
    parallel = 1

    def __init__(self, error: CardError, photo_index: int | None = None) -> None:
        self.error = error
        self.photo_index = photo_index
        self.calls: list[int] = []

    def card_for_bytes(self, data: bytes, *, seed: int | None = None, facts: Any = None) -> Any:
        self.calls.append(1)
        raise self.error

    def card_for_photos(
        self, photos: list[bytes], *, facts: Any = None, main: int = 0, seed: int | None = None
    ) -> Any:
        self.calls.append(len(photos))
        if self.photo_index is not None:
            self.error.photo_index = self.photo_index
        raise self.error

    def describe(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


def product_job(photos: list[str]) -> ImageJob:
    ref = make_ref("shop", key=FOLDER + "product.json", sequencer=secrets.token_hex(8).upper())
    return ImageJob(
        job_id=ImageJob.job_id_for(ref),
        trace_id=secrets.token_hex(16),
        object=ref,
        product=ProductSpec(photos=photos, main=0),
    )


def result_for(engine: StandIn, job: ImageJob, fetch: Any = None) -> CardResult:
    async def fetch_bytes(ref: ObjectRef) -> bytes:
        return b"photo bytes of " + ref.key.encode()

    handler = JobHandler(settings(), engine, fetch or fetch_bytes)  # type: ignore[arg-type]
    try:
        return asyncio.run(handler.result_for(job))
    finally:
        handler.close()


def test_a_bad_photo_in_a_product_puts_its_key_first_in_the_product_s_detail() -> None:
    engine = StandIn(ImageError("truncated JPEG: image file is truncated"), photo_index=2)
    result = result_for(engine, product_job(PHOTOS))
    assert engine.calls == [3]
    assert (result.status, result.reason) == (CardStatus.rejected, "bad_image")
    assert result.detail == "shop-42/123/label.jpg: truncated JPEG: image file is truncated"
    assert result.product is not None and result.product.photos == PHOTOS


def test_each_image_reason_keeps_its_own_status_and_reason_with_the_photo_named() -> None:
    result = result_for(StandIn(EmptyImage("the object is empty"), 0), product_job(PHOTOS))
    assert (result.status, result.reason) == (CardStatus.rejected, "empty_object")
    assert result.detail == "shop-42/123/front.jpg: the object is empty"


def test_a_product_of_one_photo_names_it_though_its_card_is_made_by_card_for_bytes() -> None:
    engine = StandIn(ImageError("not an image: the first bytes are plain text"))
    result = result_for(engine, product_job(PHOTOS[:1]))
    assert engine.calls == [1]
    assert result.reason == "bad_image"
    assert result.detail == "shop-42/123/front.jpg: not an image: the first bytes are plain text"


@pytest.mark.parametrize(
    ("error", "photo_index"),
    [
        (InvalidOutput("the card is not JSON"), None),  # the model's fault, not a photo's
        (ImageError("one of them is bad"), None),  # an engine that does not say which
        (ImageError("out of range"), 7),
    ],
)
def test_an_error_that_is_no_one_photo_s_keeps_its_detail(
    error: CardError, photo_index: int | None
) -> None:
    result = result_for(StandIn(error, photo_index), product_job(PHOTOS))
    assert result.detail == str(error)


def test_a_single_photo_job_s_detail_is_unchanged() -> None:
    ref = make_ref("shop", key="shop-42/alone.jpg")
    job = ImageJob(job_id=ImageJob.job_id_for(ref), trace_id=secrets.token_hex(16), object=ref)
    result = result_for(StandIn(ImageError("corrupt JPEG")), job)
    assert (result.reason, result.detail) == ("bad_image", "corrupt JPEG")


def test_a_product_photo_over_the_byte_limit_is_named_too() -> None:
    async def fetch(ref: ObjectRef) -> bytes:
        if ref.key.endswith("back.jpg"):
            raise ObjectTooLarge("over 2000000 bytes")
        return b"fine"

    engine = StandIn(ImageError("never called"))
    result = result_for(engine, product_job(PHOTOS), fetch)
    assert engine.calls == []
    assert (result.status, result.reason) == (CardStatus.rejected, "image_too_large")
    assert result.detail == "shop-42/123/back.jpg: over 2000000 bytes"


def test_the_engine_marks_which_photo_it_could_not_prepare() -> None:
    """``CardEngine.card_for_photos`` on real bytes (its own ``prepare``, no model): the
    truncated JPEG, third of three, raises its image error marked ``photo_index`` 2, and no
    card is attempted."""
    from services.inference.engine.card_engine import (
        CardEngine,  # loads llama.cpp: not at collection
    )

    images: list[Any] = []
    stand_in = SimpleNamespace(
        settings=EngineSettings(),
        encoder_input=EncoderInput(128, "pad"),
        limits=ImageLimits(),
        _refuse_if_closing=lambda: None,
        card_for_images=lambda found, **_: images.append(found),
    )
    stand_in.prepare = lambda data: CardEngine.prepare(stand_in, data)  # type: ignore[arg-type]
    photos = [hostile.jpeg(), hostile.jpeg((200, 200)), hostile.truncated_jpeg()]
    with pytest.raises(ImageError) as raised:
        CardEngine.card_for_photos(stand_in, photos)  # type: ignore[arg-type]
    assert getattr(raised.value, "photo_index", None) == 2
    assert "truncated" in str(raised.value).lower()
    assert images == []
    CardEngine.card_for_photos(stand_in, photos[:2])  # type: ignore[arg-type]
    assert len(images) == 1 and len(images[0]) == 2
