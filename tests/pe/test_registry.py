"""The registry and configs/pe stay in sync; bad names and options are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from rope_lab.pe import available_pes, available_scalings, build_pe, build_scaling

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_every_registered_pe_has_exactly_one_config_and_vice_versa():
    files = {p.stem for p in (CONFIGS / "pe").glob("*.yaml")}
    assert files == set(available_pes())


def test_every_registered_scaling_has_a_config():
    files = {p.stem for p in (CONFIGS / "pe" / "scaling").glob("*.yaml")}
    assert files == set(available_scalings())


def test_unknown_pe_lists_choices():
    with pytest.raises(ValueError, match=r"unknown positional encoding \(pe\) 'ropee'; choose one of: \[.*'rope'"):
        build_pe({"name": "ropee"})


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError, match=r"no option\(s\) \['bas'\]; valid options: \[.*'base'"):
        build_pe({"name": "rope", "bas": 10})


def test_mistyped_value_is_named():
    with pytest.raises(ValueError, match="base"):
        build_pe({"name": "rope", "base": "ten thousand"})


def test_unknown_scaling_lists_choices():
    with pytest.raises(ValueError, match=r"unknown scaling.*'warp'.*'none'"):
        build_scaling({"name": "warp"})
