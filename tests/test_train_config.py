"""Recipes and overrides: every shipped recipe loads; user errors are one line on stderr with exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssamba_training import train as train_module
from ssamba_training.config import RecipeError, apply_overrides, build_recipe, load_recipe

RECIPES = Path(train_module.__file__).parent / "recipes"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_recipes_load(path):
    recipe = load_recipe(path)
    assert recipe.data.root is None  # the user names the data


def test_published_hyper_parameters():
    sc35, sc12, esc = (
        load_recipe(RECIPES / f"{name}.yaml") for name in ("speechcommands-35", "speechcommands-12", "esc50")
    )
    assert (sc35.optim.lr, sc35.data.batch_size, sc35.epochs, sc35.loss) == (2.5e-4, 128, 30, "bce")
    assert (sc35.augment.freqm, sc35.augment.timem, sc35.augment.mixup, sc35.augment.noise) == (
        48,
        48,
        0.6,
        True,
    )
    assert (sc35.schedule.start_epoch, sc35.schedule.gamma, sc35.optim.betas) == (5, 0.85, [0.95, 0.999])
    assert sc35.model.overrides["target_length"] == 128 and sc12.data.task == "12"
    assert sc12.to_dict() == {**sc35.to_dict(), "data": {**sc35.to_dict()["data"], "task": "12"}}
    assert (esc.optim.lr, esc.data.batch_size, esc.epochs, esc.loss, esc.augment.mixup) == (
        1e-4,
        48,
        50,
        "ce",
        0.0,
    )
    assert (
        esc.augment.freqm,
        esc.augment.timem,
        esc.schedule.start_epoch,
        esc.model.overrides["target_length"],
    ) == (24, 96, 6, 512)


def test_overrides_are_typed_and_nested():
    recipe = load_recipe(RECIPES / "kws-stream.yaml", [
        "optim.lr=1e-3", "epochs=2", "model.depth=4", "data.root=/x", "stream.train_blocks=[2, null]",
        "data.fold=all", "optim.grad_clip=null", "data.unknown_word_weights={goat: 3, of: 2.5}",
    ])  # fmt: skip
    assert recipe.optim.lr == 1e-3 and isinstance(recipe.optim.lr, float)
    assert (recipe.epochs, recipe.model.overrides["depth"], recipe.data.root) == (2, 4, "/x")
    assert (
        recipe.stream.train_blocks == [2, None]
        and recipe.data.fold == "all"
        and recipe.optim.grad_clip is None
    )
    assert recipe.data.unknown_word_weights == {"goat": 3.0, "of": 2.5}
    assert isinstance(recipe.data.unknown_word_weights["goat"], float)
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2"]) == {"a": {"b": 1, "c": 2}}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lrr=1"], "unknown recipe key 'optim.lrr' (optim has: name, lr,"),
        (["model.depthh=4"], "unknown recipe key 'model.depthh' (a ssamba-kws config has:"),
        (["epochs=many"], "recipe key 'epochs' must be int, got 'many'"),
        (["model.depth=2.5"], "recipe key 'model.depth' must be int, got 2.5"),
        (["task=dance"], "recipe key 'task' must be one of classify, kws-stream, ssl"),
        (["data.fold=7"], "'data.fold' must be 1..5 or 'all'"),
        (["stream.eval_blocks=[0]"], "'stream.eval_blocks' must list block sizes >= 1"),
        (["model.name=ssamba-huge"], "unknown model.name 'ssamba-huge'"),
        (["optim=3"], "recipe section 'optim' must be a mapping"),
        (["data.unknown_word_weights=[goat]"], "recipe key 'data.unknown_word_weights' must be"),
        (
            ["data.unknown_word_weights={goat: lots}"],
            "'data.unknown_word_weights' must be dict[str, float] | None, got {'goat': 'lots'}",
        ),
        (["lr"], "override 'lr' is not of the form key=value"),
        (["data.label_fraction=0"], "'data.label_fraction' must be in (0, 1], got 0"),
        (["data.kind=unlabelled", "data.label_fraction=0.1"], "data.label_fraction needs labelled data"),
        (["augment.speed=[1.2, 1.1]"], "augment.speed must be [low, high] with 0.5 <= low <= high <= 2"),
        (["augment.speed=[0.9]"], "augment.speed take two numbers each"),
        (["augment.mel_warp=0.7"], "augment.mel_warp must be in [0, 0.5)"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(RecipeError, match=None) as caught:
        load_recipe(RECIPES / "kws-stream.yaml", overrides)
    assert message in str(caught.value)


def test_build_rejects_unknown_sections():
    with pytest.raises(RecipeError, match="unknown recipe key 'optimizer'"):
        build_recipe({"optimizer": {}})


def _main_error(capsys, *argv: str) -> str:
    assert train_module.main(list(argv)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err
    return lines[0]


def test_cli_user_errors_are_one_line(capsys, tmp_path):
    kws = str(RECIPES / "kws-stream.yaml")
    assert "unknown recipe key 'optim.lrr'" in _main_error(capsys, "--recipe", kws, "optim.lrr=1")
    assert "'optim.lr' must be float, got 'fast'" in _main_error(capsys, "--recipe", kws, "optim.lr=fast")
    assert "recipe key 'data.root' is not set" in _main_error(capsys, "--recipe", kws, "--out", str(tmp_path))
    assert "does not exist" in _main_error(capsys, "--recipe", kws, f"data.root={tmp_path / 'nowhere'}")
    assert f"recipe {tmp_path / 'no.yaml'} not found" in _main_error(
        capsys, "--recipe", str(tmp_path / "no.yaml")
    )
    assert "--recipe" in _main_error(capsys)  # argparse's own error, in one line
    (tmp_path / "bad.yaml").write_text("task: [unclosed\n")
    assert "is not valid YAML" in _main_error(capsys, "--recipe", str(tmp_path / "bad.yaml"))
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    assert "extends itself" in _main_error(capsys, "--recipe", str(tmp_path / "loop.yaml"))


def test_cli_missing_resume_checkpoint_is_one_line(capsys, tmp_path):
    data = tmp_path / "sc"
    data.mkdir()
    missing = tmp_path / "out" / "checkpoints" / "step-0000100"
    line = _main_error(
        capsys, "--recipe", str(RECIPES / "kws-stream.yaml"), f"data.root={data}", "--resume", str(missing)
    )
    assert "not a training checkpoint" in line and str(missing) in line


def test_yes_no_on_off_are_words_not_booleans(tmp_path):
    """The Speech Commands keywords include yes/no/on/off, which YAML 1.1 reads as booleans."""
    recipe = build_recipe(apply_overrides({"task": "kws-stream"}, ["data.keywords=[yes,no,on,off]"]))
    assert recipe.data.keywords == ["yes", "no", "on", "off"]
    path = tmp_path / "r.yaml"
    path.write_text("task: kws-stream\ndata:\n  keywords: [yes, no, on, off]\naugment:\n  noise: true\n")
    loaded = load_recipe(path)
    assert loaded.data.keywords == ["yes", "no", "on", "off"] and loaded.augment.noise is True


def test_resuming_with_a_changed_recipe_is_refused_or_said(capsys, tmp_path):
    """A changed batch size or learning rate would silently alter a resumed run (and recipe.yaml)."""
    from ssamba_stream.model.checkpoint import save_model
    from ssamba_stream.model.registry import build_model

    data = tmp_path / "sc"
    data.mkdir()
    kws = str(RECIPES / "kws-stream.yaml")
    started = load_recipe(kws, [f"data.root={data}"])
    step = save_model(build_model("ssamba-kws", depth=1, num_classes=2), tmp_path / "out" / "checkpoints" / "step-0000010",
                      metadata={"recipe": started.to_dict(), "step": 10})  # fmt: skip
    (step / "trainer.json").write_text("{}")
    line = _main_error(capsys, "--recipe", kws, f"data.root={data}", "data.batch_size=7", "optim.lr=0.5",
                       "--out", str(tmp_path / "out"), "--resume", "auto")  # fmt: skip
    assert "the recipe differs from the run's" in line and "data.batch_size" in line and "optim.lr" in line
    assert "-> 7" in line and "-> 0.5" in line
    assert (
        train_module.main(
            [
                "--recipe",
                kws,
                f"data.root={data}",
                "epochs=99",
                "--out",
                str(tmp_path / "out"),
                "--resume",
                "auto",
            ]
        )
        == 2
    )  # fmt: skip (goes on to the empty data folder)
    assert "resuming with changed settings: epochs 30 -> 99" in capsys.readouterr().out
