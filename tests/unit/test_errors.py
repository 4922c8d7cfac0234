"""Retry-After is declared once (service.errors): every error that passes by itself carries it."""

from __future__ import annotations

import pytest

from service import errors


@pytest.mark.parametrize("error", [errors.Overloaded, errors.BackendUnavailable])
def test_errors_that_pass_by_themselves_carry_retry_after(error: type[errors.ServiceError]) -> None:
    assert error("x").headers == {"Retry-After": str(errors.RETRY_AFTER_SECONDS)}


def test_a_table_unavailable_carries_retry_after_only_while_it_loads() -> None:
    assert errors.TableUnavailable("failed to load").headers == {}
    loading = errors.TableUnavailable("loading", retry=True)
    assert loading.headers == {"Retry-After": str(errors.RETRY_AFTER_SECONDS)}


def test_other_headers_are_kept_beside_retry_after() -> None:
    error = errors.Unauthorized("no key", headers={"WWW-Authenticate": "Bearer"})
    assert error.headers == {"WWW-Authenticate": "Bearer"}
    both = errors.Overloaded("full", headers={"X-Other": "1"})
    assert both.headers == {"Retry-After": "1", "X-Other": "1"}
