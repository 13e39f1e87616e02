"""The install commands the docs show can work: found, and none asks an index for our packages.

Running each command in a fresh virtualenv takes about a minute, so that part is
``nox -s packages`` (tools/check_docs_install.py); these are the cheap checks of the same
commands, run with every test run.
"""

from __future__ import annotations

import check_docs_install as docs
import demo


def test_every_install_command_in_the_docs_is_one_that_works_before_publishing() -> None:
    commands = docs.collect()
    where = {w.split(":")[0] for c in commands for w in c.where}
    assert {
        "README.md",
        "examples/README.md",
        "packages/vpp-gateway/README.md",
        "packages/vpp-headend/README.md",
        f"{docs.DEMO} {docs.DEMO_TEXT}",
    } <= where
    assert docs.problems(commands) == []
    # the whole system from a checkout: the command the examples and the demo give
    full = next(c for c in commands if "examples/README.md" in " ".join(c.where))
    assert set(docs.expected(full.text).ours) == set(docs.OURS)


def test_the_demo_text_read_from_source_is_what_the_demo_prints() -> None:
    assert docs.demo_text() == demo.HOW_TO_RUN


def test_commands_are_found_in_fences_prompts_chains_continuations_and_inline_code() -> None:
    text = """
Install with `pip install -e
packages/vpp-split` first.

```console
$ pip install 'vpp-headend[embedded]'   # a comment
$ python3 -m pip install nox && nox -s demo
```

~~~sh
uv pip install -e packages/vpp-protocol \\
    -e packages/vpp-gateway
vpp-gateway run site.yaml
~~~
"""
    assert list(docs.markdown_commands(text)) == [
        (6, "pip install 'vpp-headend[embedded]'"),
        (7, "python3 -m pip install nox"),
        (11, "uv pip install -e packages/vpp-protocol -e packages/vpp-gateway"),
        (2, "pip install -e packages/vpp-split"),
    ]


def test_commands_that_cannot_work_today_are_named_with_the_reason() -> None:
    def bad(text: str) -> list[str]:
        return docs.problems([docs.Command(text, ["doc.md:1"])])

    assert "on no public index" in " ".join(bad("pip install vpp-gateway"))
    assert "vpp-protocol, vpp-split" in " ".join(bad("pip install -e packages/vpp-gateway"))
    assert "zsh" in " ".join(bad("pip install -e packages/vpp-protocol[upb]"))
    assert bad("pip install --find-links dist 'vpp-headend[embedded]'") == []
    assert bad("pip install dist/*.whl") == []
