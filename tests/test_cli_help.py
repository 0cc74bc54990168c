"""Option help lists come from the registries: every registered name shows in the help of the option that
takes it, so a new metric, allocation, sampling strategy, backend or K/V cache type needs no CLI edit."""

from __future__ import annotations

import typer

from adaprune_edge.cli.app import app
from adaprune_edge.data.calibration import STRATEGIES
from adaprune_edge.latency.backends import backend_names
from adaprune_edge.prune.allocation import ALLOCATIONS
from adaprune_edge.prune.importance import AGGREGATIONS, METRICS
from adaprune_edge.registry import Registry
from adaprune_edge.runtime import kvcache


def _help(command: str, option: str) -> str:
    cmd = typer.main.get_command(app).commands[command]
    return next(p.help for p in cmd.params if option in p.opts)


def test_every_registered_name_is_in_its_options_help():
    cases = {("prune", "--metric"): METRICS.names(), ("prune", "--aggregation"): AGGREGATIONS.names(),
             ("prune", "--allocation"): ALLOCATIONS.names(), ("prune", "--sampling"): STRATEGIES.names(),
             ("tradeoff", "--metric"): METRICS.names(), ("tradeoff", "--allocation"): ALLOCATIONS.names(),
             ("bench", "--backend"): backend_names(), ("build", "--kv-cache"): list(kvcache.ORDER),
             ("search", "--kv-cache"): list(kvcache.ORDER)}
    for (command, option), names in cases.items():
        text = _help(command, option)
        assert [n for n in names if n not in text] == [], (command, option, text)
    assert "profile" in ALLOCATIONS.names()  # registered in prune/profile.py, complete once prune is imported


def test_listing_follows_registration_and_shows_help_words():
    reg: Registry[int] = Registry("thing")
    reg.register("b", help="the second")(2)
    reg.register("a")(1)
    assert reg.listing() == "b (the second), a"
    assert reg.listing(described=False) == "b, a"
    assert reg.help("b") == "the second" and reg.help("a") == ""
