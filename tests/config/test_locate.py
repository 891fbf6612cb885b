"""The TOML key-path -> line locator."""

from __future__ import annotations

from config.locate import find_line, scan_key_lines

REPRESENTATIVE = '''\
# header comment with [brackets] and key = "value"
title = "x"                       # line 2

[engine]                          # line 4
name = "a # not a comment [x]"    # line 5
seed = 1

[[agents]]                        # line 8
name = "first"
path = "m:C"
params = { lookback = 20, inner = { deep = 1 } }   # line 11

[agents.params.extra]             # line 13
k = 1

[[agents]]                        # line 16
name = "second"
"dotted.quoted" = 1               # line 18
site.owner.name = "bob"           # line 19

[blender.lightgbm]                # line 21
quantiles = [                     # line 22
  0.05,                           # line 23
  0.5,   # comment
  0.95,                           # line 25
]
notes = """
multi-line = "not a key"
[not.a.table]
"""
after = 1                         # line 31

[kafka]
egress = [
  { bus_pattern = "signal.>", topic = "t1" },   # line 35
  { bus_pattern = "intent.>", topic = "t2" },   # line 36
]
literal = 'C:\\path'
ml = \'\'\'
[[agents]]
\'\'\'
last = true                       # line 42

[[kafka.topics]]                  # line 44
name = "a"
[[kafka.topics]]                  # line 46
name = "b"
[ "telemetry" . 'component_levels' ]   # line 48
"engine.bus" = "debug"            # line 49
'''


def test_scan_when_representative_file_then_keys_map_to_their_lines() -> None:
    # Arrange
    text = REPRESENTATIVE

    # Act
    lines = scan_key_lines(text)

    # Assert
    expected = {
        ("title",): 2,
        ("engine",): 4,
        ("engine", "name"): 5,
        ("engine", "seed"): 6,
        ("agents",): 8,
        ("agents", 0): 8,
        ("agents", 0, "name"): 9,
        ("agents", 0, "params"): 11,
        ("agents", 0, "params", "lookback"): 11,
        ("agents", 0, "params", "inner", "deep"): 11,
        ("agents", 0, "params", "extra"): 13,
        ("agents", 0, "params", "extra", "k"): 14,
        ("agents", 1): 16,
        ("agents", 1, "name"): 17,
        ("agents", 1, "dotted.quoted"): 18,
        ("agents", 1, "site"): 19,
        ("agents", 1, "site", "owner", "name"): 19,
        ("blender",): 21,
        ("blender", "lightgbm"): 21,
        ("blender", "lightgbm", "quantiles"): 22,
        ("blender", "lightgbm", "quantiles", 0): 23,
        ("blender", "lightgbm", "quantiles", 2): 25,
        ("blender", "lightgbm", "after"): 31,
        ("kafka", "egress", 0): 35,
        ("kafka", "egress", 1, "topic"): 36,
        ("kafka", "last"): 42,
        ("kafka", "topics", 0): 44,
        ("kafka", "topics", 1, "name"): 47,
        ("telemetry", "component_levels"): 48,
        ("telemetry", "component_levels", "engine.bus"): 49,
    }
    assert {path: lines.get(path) for path in expected} == expected


def test_scan_when_keys_appear_inside_strings_then_they_are_not_keys() -> None:
    # Arrange
    text = REPRESENTATIVE

    # Act
    lines = scan_key_lines(text)

    # Assert
    assert ("not",) not in lines
    assert ("blender", "lightgbm", "multi-line") not in lines
    assert ("agents", 2) not in lines  # the [[agents]] inside ''' ... ''' is text


def test_find_line_when_path_unknown_then_nearest_enclosing_key_line() -> None:
    # Arrange
    lines = scan_key_lines("[risk]\nmax_weight = 0.2\n\n[[agents]]\nname = 'a'\n")

    # Act
    missing_field = find_line(lines, ("agents", 0, "path"))
    nothing_known = find_line(lines, ("selector", "top_k"))
    exact = find_line(lines, ("risk", "max_weight"))

    # Assert
    assert (missing_field, nothing_known, exact) == (4, None, 2)


def test_scan_when_nested_arrays_of_tables_then_indices_counted_per_parent() -> None:
    # Arrange
    text = "[[a]]\n[[a.b]]\nx = 1\n[[a.b]]\nx = 2\n[[a]]\n[[a.b]]\nx = 3\n"

    # Act
    lines = scan_key_lines(text)

    # Assert
    assert lines[("a", 0, "b", 1, "x")] == 5
    assert lines[("a", 1, "b", 0, "x")] == 8
    assert ("a", 1, "b", 1) not in lines


def test_scan_when_text_is_not_valid_toml_then_best_effort_without_raising() -> None:
    # Arrange
    text = '[risk\nmax_positions = = 3\n"unterminated = 1\n[ok]\nfine = 1\n{}]]\n'

    # Act
    lines = scan_key_lines(text)

    # Assert
    assert lines[("ok", "fine")] == 5


def test_scan_when_crlf_line_endings_then_same_lines() -> None:
    # Arrange
    text = "[risk]\r\nmax_positions = 3\r\n\r\n[bus]\r\nbatch_size = 2\r\n"

    # Act
    lines = scan_key_lines(text)

    # Assert
    assert lines[("risk", "max_positions")] == 2
    assert lines[("bus", "batch_size")] == 5
