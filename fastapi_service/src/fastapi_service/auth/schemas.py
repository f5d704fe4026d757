"""The token endpoint's form and answer (contract: TokenRequest, Token)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import MISSING, BaseModel, ConfigDict, Field

NO_NUL = r"^[^\u0000]*$"


class TokenRequest(BaseModel):
    """OAuth2 password grant form fields (RFC 6749 section 4.3)."""

    model_config = ConfigDict(extra="forbid")

    grant_type: Literal["password"] | MISSING = MISSING
    username: Annotated[str, Field(min_length=1, max_length=254, pattern=NO_NUL)]
    password: Annotated[str, Field(min_length=1, max_length=128, pattern=NO_NUL)]


class Token(BaseModel):
    model_config = ConfigDict(extra="forbid")

    access_token: str
    token_type: Literal["bearer"]
    expires_in: Annotated[int, Field(ge=1)]
