"""Reading the console's forms: text fields, and a key or file given either as an upload or
pasted (the upload wins when both are)."""

from __future__ import annotations

from starlette.datastructures import FormData, UploadFile

MAX_FILE_BYTES = 1024 * 1024  # a key or a referential file: far less in practice


class FormError(ValueError):
    """A form the console cannot read; the message is French, one line."""


def text(form: FormData, name: str, limit: int = 200) -> str:
    value = form.get(name, "")
    return value.strip()[:limit] if isinstance(value, str) else ""


async def file_or_text(form: FormData, upload: str, pasted: str) -> str:
    """The text of the uploaded file `upload`, or else of the field `pasted`."""
    found = form.get(upload)
    if isinstance(found, UploadFile) and found.filename:
        data = await found.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise FormError("fichier trop volumineux (1 Mio au plus)")
        try:
            return data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise FormError(
                "fichier binaire : donnez la clé au format texte (gpg --armor --export)"
            ) from None
    value = form.get(pasted, "")
    return value.strip() if isinstance(value, str) else ""
