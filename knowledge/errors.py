from systimz.errors import TooLarge, UnsupportedMediaType


class DocumentTooLarge(TooLarge):
    default_message = "The document is larger than 10 MB."


class UnsupportedDocumentType(UnsupportedMediaType):
    default_message = "Upload a text (.txt), Markdown (.md), HTML (.html) or PDF (.pdf) file."
