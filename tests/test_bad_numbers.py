"""Issue 30: every numeric flag of resnet-export, resnet-evaluate, resnet-predict,
resnet-explain, prepare, data-service and list-weights has a range (train.py's: its field
table, tests/training/test_recipes.py), upper bound included: an absurd value is one error line and
exit status 2, before any work.

The test walks each parser's options, so a numeric flag added later without a range
(a plain `type=int` accepts 20 digits) fails it.
"""

import pytest

ABSURD = ["1e30", "9" * 20, "-1", "nan"]


def _commands():
    """prog -> (main, parser, the arguments a call needs besides the flag)."""
    from resnet_tf.cli import data_service, evaluate, explain, export, prepare, weights

    return {
        "resnet-export": (export.main, export.export_parser, ["run"]),
        "resnet-evaluate": (evaluate.evaluate_main, evaluate.evaluate_parser,
                            ["model", "--data-dir", "images"]),
        "resnet-predict": (evaluate.predict_main, evaluate.predict_parser, ["model", "a.png"]),
        "resnet-explain": (explain.main, explain.explain_parser, ["model", "a.png", "--out", "x"]),
        "python -m resnet_tf prepare": (prepare.main, prepare.prepare_parser, ["dir", "out"]),
        "python -m resnet_tf data-service": (data_service.main,
                                             data_service.data_service_parser, []),
        "python -m resnet_tf list-weights": (weights.main, weights.list_weights_parser, []),
    }


def _numeric_options(parser):
    return [action.option_strings[-1] for action in parser._actions
            if action.option_strings and (action.type in (int, float)
                                          or getattr(action.type, "numeric", None))]


def _cases():
    cases = []
    for prog, (_, make_parser, _) in _commands().items():
        options = _numeric_options(make_parser())
        assert options, prog
        cases += [pytest.param(prog, option, value, id=f"{prog} {option} {value}")
                  for option in options for value in ABSURD]
    return cases


@pytest.mark.parametrize("prog, option, value", _cases())
def test_absurd_numbers_are_one_line_errors(prog, option, value, capsys):
    main, _, base = _commands()[prog]
    with pytest.raises(SystemExit) as stopped:
        main([*base, f"{option}={value}"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert option in lines[0] and repr(value) in lines[0]


def test_export_version_beyond_int64_is_refused(capsys):
    from resnet_tf.cli import export

    with pytest.raises(SystemExit) as stopped:
        export.main(["run", "--version", "99999999999999999999"])
    assert stopped.value.code == 2
    assert ("argument --version: expected an integer from 0 to 9223372036854775807; received "
            "'99999999999999999999'") in capsys.readouterr().err
