"""The plugin author guide's example is the real, tested code: it may never drift."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


def test_readme_when_rendered_then_example_blocks_equal_the_tested_files() -> None:
    # Arrange
    readme = (ROOT / "plugins" / "README.md").read_text()
    # Act
    blocks = _python_blocks(readme)
    # Assert: the calibrated example is the module tests/e2e/test_plugin_author.py replays
    # (it reads it from this README); the plain-Agent example is a shipped, tested plugin
    calibrated, *plain = blocks
    assert "class QuarterChangeAgent(CalibratedAgent[QuarterChangeParams]):" in calibrated
    assert plain == [
        (ROOT / "plugins" / "sma_cross.py").read_text(),
        (ROOT / "tests" / "plugins" / "test_sma_cross.py").read_text(),
    ]


def test_readme_when_config_block_loaded_then_agent_and_params_validate() -> None:
    # Arrange
    from config import load_config_text
    from engine.loader import load_agents

    readme = (ROOT / "plugins" / "README.md").read_text()
    (toml_block,) = [
        b for b in re.findall(r"```toml\n(.*?)```", readme, flags=re.DOTALL) if "[[agents]]" in b
    ]
    # Act
    cfg = load_config_text(toml_block, env={})
    (loaded,) = load_agents(cfg.agents)
    # Assert
    assert loaded.agent_cls.__name__ == "SmaCrossAgent"
    assert loaded.params.model_dump() == {"fast": 20, "slow": 50, "confidence": 0.2}
