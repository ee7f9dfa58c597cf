"""The pipeline's messages as the tests build them: object references as MinIO's events name
them, a card and results shaped like the producer of each status.  The sink's store tests, the
worker's delivery tests and the hostile-input tests build from the same ones."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from schemas.card import ProductCard
from schemas.messages import CardResult, CardStatus, ImageJob, ObjectRef, Timings

T0 = datetime(2026, 11, 26, 8, 32, 34, 582000, tzinfo=UTC)
SEQ_PUT = "18EB8B3948595CE8"


def make_ref(
    bucket: str,
    key: str = "photos/Tênis azul 01.jpg",
    sequencer: str = SEQ_PUT,
    *,
    removed: bool = False,
) -> ObjectRef:
    event_time = T0 + timedelta(seconds=int(sequencer, 16) % 1000)
    if removed:  # a removal event names only key and sequencer
        return ObjectRef(bucket=bucket, key=key, sequencer=sequencer, event_time=event_time)
    return ObjectRef(
        bucket=bucket,
        key=key,
        etag="c6f3ac6367e8af5f979ee83ba321e085",
        size=19_000,
        content_type="image/jpeg",
        sequencer=sequencer,
        event_time=event_time,
    )


SNEAKER_DESCRIPTION = (
    "Tênis de corrida masculino em tecido de malha respirável azul, com cabedal leve e flexível "
    "que acompanha o movimento natural do pé durante treinos e caminhadas. O solado de borracha "
    "com ranhuras profundas oferece aderência em pisos secos e molhados, enquanto a entressola "
    "de espuma amortece o impacto a cada passada. O cadarço tradicional permite um ajuste firme "
    "e seguro, e a palmilha removível facilita a limpeza e a troca por modelos ortopédicos. "
    "Indicado para uso diário, academia e corridas leves, combina conforto, durabilidade e um "
    "visual esportivo moderno que vai bem com roupas casuais."
)


def make_card(name: str = "Tênis de corrida azul em malha", colour: str = "azul") -> ProductCard:
    return ProductCard(
        product_name=name,
        category_standard="Calçados",
        description_long=SNEAKER_DESCRIPTION,
        color_primary=colour,
        features_list=[
            "Cabedal em malha respirável e leve",
            "Solado de borracha com boa aderência",
            "Entressola que amortece o impacto",
        ],
    )


def make_result(
    ref: ObjectRef,
    status: CardStatus,
    *,
    at: float = 0.0,
    card: ProductCard | None = None,
    reason: str | None = None,
) -> CardResult:
    """A result produced ``at`` seconds after T0, shaped like the producer of that status."""
    by_inference = status in (CardStatus.done, CardStatus.failed)
    if reason is None and status in (CardStatus.rejected, CardStatus.failed):
        reason = "bad_image"
    return CardResult(
        job_id=ImageJob.job_id_for(ref),
        trace_id=uuid.uuid4().hex,
        object=ref,
        status=status,
        card=(card or make_card()) if status is CardStatus.done else None,
        reason=reason,
        detail=f"explanation of {reason}" if reason else None,
        model_id="qwen2.5-vl-3b-q4_k_m" if by_inference else None,
        prompt_version="card-v3" if by_inference else None,
        attempts=1 if by_inference else 0,
        timings=(
            Timings(
                fetch_ms=3.5,
                image_encode_ms=812.25,
                generate_ms=4210.0,
                prompt_tokens=1024,
                completion_tokens=380,
                tokens_per_s=90.3,
                total_ms=5100.75,
            )
            if by_inference
            else None
        ),
        producer="inference" if by_inference else "ingest",
        produced_at=T0 + timedelta(seconds=at),
    )
