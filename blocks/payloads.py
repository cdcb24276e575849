"""Small typed payloads carried in button values and modal `private_metadata`.

They carry ids only; the store holds the truth. Each has `pack()`/`unpack()` and a hard
length check against Slack's limit for where it travels.
"""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError


class PayloadError(ValueError):
    """A button value or private_metadata that is not ours or was tampered with."""


class _Packed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    limit: ClassVar[int] = 2000

    def pack(self) -> str:
        raw = self.model_dump_json(exclude_none=True)
        if len(raw) > self.limit:
            raise PayloadError(f"{type(self).__name__} packs to {len(raw)} chars; limit {self.limit}")
        return raw

    @classmethod
    def unpack(cls, raw: str | None) -> Self:
        if not raw or len(raw) > cls.limit:
            raise PayloadError(f"{cls.__name__}: missing or oversized payload")
        try:
            return cls.model_validate_json(raw)
        except ValidationError as e:
            raise PayloadError(f"{cls.__name__}: {e.errors()[0]['msg']}") from e


class ButtonValue(_Packed):
    """Value of a card button: which request, for option buttons which option, and for an
    approval card the `params_mark` of the values it shows (`p`: an approval from a card drawn
    before an edit is refused)."""

    limit: ClassVar[int] = 2000
    r: str
    o: str | None = None
    p: str | None = None


class ModalMeta(_Packed):
    """private_metadata of a modal opened from a card: the request, where its card is, and the
    `params_mark` of the values the form was opened on (`p`)."""

    limit: ClassVar[int] = 3000
    r: str
    c: str | None = None
    t: str | None = None
    p: str | None = None


class BatchValue(_Packed):
    """Value of a batch card's bulk buttons: which batch, how many waiting items it showed (`n`),
    and which items it drew: the first `i` of the batch (items only ever join at the end),
    whose ids hash to `h`. A bulk click acts on exactly those."""

    limit: ClassVar[int] = 2000
    b: str
    n: int | None = None
    i: int | None = None
    h: str | None = None
    m: str | None = None
    """The `params_mark` of each waiting item drawn, as `<place in the drawn items>:<mark>`,
    comma-separated (an item edited since is not approved by a bulk click). Cards drawn before
    carry one mark per drawn item, empty for settled ones, in the card's order."""

    def marks_of(self, ids: list[str]) -> dict[str, str]:
        """Item id -> the mark the card showed for it (`ids`: the items the card drew); an item
        the card carries no mark for is absent (a bulk approval refuses it as stale)."""
        entries = self.m.split(",") if self.m else []
        if not any(":" in e for e in entries):  # drawn before places were carried
            return dict(zip(ids, entries, strict=True)) if len(entries) == len(ids) else {}
        marks: dict[str, str] = {}
        for entry in entries:
            place, _, mark = entry.partition(":")
            if place.isdigit() and int(place) < len(ids):
                marks[ids[int(place)]] = mark
        return marks


class BatchMeta(_Packed):
    """private_metadata of a batch modal: the batch, the item shown (and the `params_mark` of
    the values shown for it, `p`), the card's place, and for Reject all the items the card drew
    (`i`, `h`), how many waiting ones the form listed (`n`) and which (`k`)."""

    limit: ClassVar[int] = 3000
    b: str
    r: str | None = None
    c: str | None = None
    t: str | None = None
    i: int | None = None
    h: str | None = None
    p: str | None = None
    n: int | None = None
    k: str | None = None
    """Reject all: the places in the batch of the items its form listed, comma-separated, when
    it left out some the person may not decide (None: every waiting item the card drew)."""

    def listed_of(self, items: list[str]) -> set[str] | None:
        """The ids among the batch's `items` that a Reject all form listed (None: all it drew)."""
        if self.k is None:
            return None
        return {items[int(n)] for n in self.k.split(",") if n.isdigit() and int(n) < len(items)}
