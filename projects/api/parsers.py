"""DRF's JSON parser, refusing JSON nested too deeply for Python with a 400 rather than a 500."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            # `[[[[…]]]]` a few thousand deep: within the size limit, beyond json's recursion.
            raise ParseError("JSON parse error - the JSON is nested too deeply.") from None
