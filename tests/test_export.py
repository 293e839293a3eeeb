"""SavedModel export: each export is loaded the way TF Serving loads it.

References: the in-memory Keras model (softmax(logits / T) in float64),
`fit_temperature` on the validation logits, and the eager library scorer
`adversarial_robustness`. The SavedModels are run by `saved_model_cli run`
and by the TF1 session loader (what TF Serving's C++ loader does), both in
subprocesses.
"""

import contextlib
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request

import keras
import numpy as np
import pytest
import tensorflow as tf

from aradals_tf import atomic
from aradals_tf import backbones
from aradals_tf import cli
from aradals_tf import data
from aradals_tf import experiments
from aradals_tf import export
from aradals_tf import metrics
from aradals_tf import robustness
from aradals_tf import temperature
from aradals_tf import training
from aradals_tf.export import saved_model

BIN = os.path.dirname(sys.executable)
DIGIT_NAMES = list("0123456789")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def softmax(logits):
    logits = np.asarray(logits, np.float64)
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def logits_of(model, x):
    return np.asarray(model(tf.constant(x, tf.float32), training=False), np.float32)


def check_serving_outputs(outputs, model, x, t, class_names=None):
    """The acceptance checks against the in-memory Keras model."""
    logits = logits_of(model, x)
    expected = softmax(logits / t)
    probabilities = outputs["probabilities"]
    np.testing.assert_allclose(probabilities, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(outputs["logits"], logits / np.float32(t), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs["confidence"], probabilities.max(axis=1))
    np.testing.assert_array_equal(outputs["predicted_class"], probabilities.argmax(axis=1))
    np.testing.assert_array_equal(outputs["predicted_class"], logits.argmax(axis=1))
    if class_names:
        labels = [v.decode() if isinstance(v, bytes) else v for v in outputs["predicted_label"]]
        assert labels == [class_names[i] for i in outputs["predicted_class"]]
    else:
        assert "predicted_label" not in outputs


def check_robustness_outputs(outputs, model, x, eps_max=0.3, steps=10):
    """Against the scorer with the export's settings: the model's own target
    choice (an ARAdaLSModel's `attack_candidates`), else the scorer's default."""
    radius, level = robustness.adversarial_robustness(
        model,
        x,
        eps_max=eps_max,
        steps=steps,
        candidates=getattr(model, "attack_candidates", None),
    )
    radius, level = radius.numpy(), level.numpy()
    flipped = level < steps
    np.testing.assert_array_equal(outputs["level"], level)
    np.testing.assert_array_equal(outputs["flipped"], flipped)
    np.testing.assert_allclose(
        outputs["radius"], np.where(flipped, radius, export.NEVER_FLIPPED_RADIUS), rtol=1e-5
    )


@pytest.fixture(scope="module")
def digits():
    train = data.load_arrays("digits", "train")
    validation = data.load_arrays("digits", "validation")
    test_x, _ = data.load_arrays("digits", "test")
    # The test inputs are exact multiples of 1/255, so uint8 feeds the same.
    test_x = np.round(test_x[:24] * 255) / 255
    return train, validation, test_x.astype(np.float32)


@pytest.fixture(scope="module")
def vanilla(digits):
    (x, y), _, _ = digits
    keras.utils.set_random_seed(0)
    model = backbones.mlp((8, 8, 1), 10)
    model.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, batch_size=128, epochs=3, verbose=0)
    return model


@pytest.fixture(scope="module")
def adals(digits):
    (x, y), _, _ = digits
    keras.utils.set_random_seed(1)
    model = training.ARAdaLSModel(backbones.mlp((8, 8, 1), 10), 10, eps_max=0.3, num_strata=3)
    model.compile(optimizer="adam")
    with pytest.warns(UserWarning, match="AdaptiveSmoothing"):
        model.fit(x, y, batch_size=256, epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory, adals):
    """A run directory holding the AR-AdaLS model, exported by the CLI."""
    root = tmp_path_factory.mktemp("cli")
    run = root / "digits_adals"
    run.mkdir()
    adals.save(str(run / "model.keras"))
    config = experiments.TrainConfig(dataset="digits", method="ar-adals", epochs=1).validate()
    atomic.write_json(str(run / "config.json"), dataclasses.asdict(config))
    base = root / "saved_models"
    stdout = io.StringIO()
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stdout(stdout):
        cli.main(["export", "--run", str(run), "--base-dir", str(base)])
    assert exit_info.value.code == 0
    _, loaded = experiments.load_run(str(run))
    return run, base, os.path.join(str(base), "digits_adals", "1"), loaded, stdout.getvalue()


@pytest.fixture(scope="module")
def exports(tmp_path_factory, digits, vanilla, cli_export):
    """Three exports: vanilla raw (mlp/1), vanilla with T (mlp/2), AR-AdaLS
    with T and class names (by `aradals-tf export`)."""
    _, (xv, yv), _ = digits
    base = str(tmp_path_factory.mktemp("exports") / "saved_models")
    raw = export.export_saved_model(vanilla, base, name="mlp", calibration="none", eps_max=0.3)
    scaled = export.export_saved_model(
        vanilla, base, name="mlp", calibration="temperature", validation_data=(xv, yv), eps_max=0.3
    )
    return {
        "base": base,
        "raw": (raw, vanilla, None),
        "scaled": (scaled, vanilla, None),
        "adals": (cli_export[2], cli_export[3], DIGIT_NAMES),
    }


def temperature_of(path):
    return export.read_metadata(path)["calibration"]["temperature"]


def test_layout_versions_and_metadata(exports, digits, vanilla):
    _, (xv, yv), _ = digits
    base = exports["base"]
    assert os.listdir(base) == ["mlp"]
    # Only integer versions, no partial siblings left behind.
    assert sorted(os.listdir(os.path.join(base, "mlp"))) == ["1", "2"]
    assert os.listdir(os.path.dirname(exports["adals"][0])) == ["1"]
    assert export.next_version(base, "mlp") == 3
    for path, _, _ in (exports["raw"], exports["scaled"], exports["adals"]):
        assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    raw, scaled, ada = (export.read_metadata(exports[k][0]) for k in ("raw", "scaled", "adals"))
    assert raw["calibration"]["method"] == "none" and raw["calibration"]["temperature"] == 1.0
    assert raw["calibration"]["validation"] is None and raw["class_names"] is None
    # T is the temperature-scaling code's fit on the validation logits.
    for meta, model in ((scaled, vanilla), (ada, exports["adals"][1])):
        logits = logits_of(model, xv)
        t = temperature.fit_temperature(logits, yv)
        assert meta["calibration"]["temperature"] == pytest.approx(t, rel=1e-5)
        summary = meta["calibration"]["validation"]
        assert summary["examples"] == len(yv)
        assert summary["ece_before"] == pytest.approx(
            float(metrics.expected_calibration_error(yv, logits, from_logits=True)), abs=1e-6
        )
        assert summary["ece_after"] == pytest.approx(
            float(metrics.expected_calibration_error(yv, logits / np.float32(t), from_logits=True)),
            abs=1e-6,
        )
        assert summary["nll_after"] <= summary["nll_before"]
    assert ada["training_method"] == "ar-adals" and ada["class_names"] == DIGIT_NAMES
    assert ada["input"]["shape"] == [None, 8, 8, 1] and ada["input"]["dtype"] == "float32"
    assert ada["robustness"]["eps_max"] == 0.3 and ada["robustness"]["steps"] == 10
    assert "predicted_label" in ada["signatures"]["serving_default"]
    assert ada["aradals_tf_version"] and ada["tensorflow_version"] == tf.__version__
    # The temperature is a variable of the SavedModel.
    loaded = tf.saved_model.load(exports["adals"][0])
    (variable,) = [v for v in loaded.variables if "temperature" in v.name]
    assert float(variable.numpy()) == pytest.approx(ada["calibration"]["temperature"])
    assert sorted(loaded.signatures) == sorted(export.SIGNATURES)


TF1_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    jobs = json.loads(sys.argv[1])
    x = np.load(jobs["x"])
    tf.compat.v1.disable_eager_execution()
    feeds = {"serving_default": x, "robustness": x,
             "serving_uint8": np.round(x * 255).astype(np.uint8)}
    for path, out in jobs["exports"]:
        results = {}
        with tf.compat.v1.Session(graph=tf.Graph()) as sess:
            meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)
            for name, signature in meta.signature_def.items():
                if name not in feeds:
                    continue
                keys = sorted(signature.outputs)
                values = sess.run([signature.outputs[k].name for k in keys],
                                  {signature.inputs["images"].name: feeds[name]})
                results.update({f"{name}/{k}": v for k, v in zip(keys, values)})
        np.savez(out, **results)
    """
)
EXPORT_KEYS = ("raw", "scaled", "adals")


@pytest.fixture(scope="module")
def served(exports, digits, tmp_path_factory):
    """Runs every export the way TF Serving loads it, in parallel
    subprocesses: the installed `saved_model_cli run` on serving_default of
    each export, and the TF1 session loader on all signatures.
    Returns {key: (saved_model_cli outputs, TF1 outputs by signature)}."""
    _, _, x = digits
    root = tmp_path_factory.mktemp("served")
    np.save(root / "x.npy", x)
    (root / "tf1.py").write_text(TF1_SCRIPT)
    jobs = {
        "x": str(root / "x.npy"),
        "exports": [[exports[k][0], str(root / f"{k}.npz")] for k in EXPORT_KEYS],
    }
    commands = [
        [
            os.path.join(BIN, "saved_model_cli"),
            "run",
            "--dir",
            exports[key][0],
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"images={root / 'x.npy'}",
            "--outdir",
            str(root / key),
        ]
        for key in EXPORT_KEYS
    ] + [[sys.executable, str(root / "tf1.py"), json.dumps(jobs)]]
    processes = [
        subprocess.Popen(
            command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for command in commands
    ]
    for process in processes:
        log, _ = process.communicate(timeout=240)
        assert process.returncode == 0, log[-3000:]
    results = {}
    for key in EXPORT_KEYS:
        cli_outputs = {
            name[:-4]: np.load(root / key / name, allow_pickle=True)
            for name in os.listdir(root / key)
        }
        by_signature = {}
        npz = np.load(root / f"{key}.npz", allow_pickle=True)
        for name in npz.files:
            signature, output = name.split("/")
            by_signature.setdefault(signature, {})[output] = npz[name]
        results[key] = (cli_outputs, by_signature)
    return results


@pytest.mark.parametrize("key", EXPORT_KEYS)
def test_saved_model_cli_run_matches_keras(exports, served, digits, key):
    _, _, x = digits
    path, model, names = exports[key]
    outputs = served[key][0]
    assert set(outputs) == set(export.read_metadata(path)["signatures"]["serving_default"])
    check_serving_outputs(outputs, model, x, temperature_of(path), names)


@pytest.mark.parametrize("key", EXPORT_KEYS)
def test_tf1_session_loader_runs_every_signature(exports, served, digits, key):
    _, _, x = digits
    path, model, names = exports[key]
    by_signature = served[key][1]
    assert set(by_signature) == set(export.SIGNATURES)
    t = temperature_of(path)
    check_serving_outputs(by_signature["serving_default"], model, x, t, names)
    # uint8 0-255 gives the same answers as float32 / 255.
    check_serving_outputs(by_signature["serving_uint8"], model, x, t, names)
    # The robustness signature: the library scorer's radius and level, and
    # the same calibrated prediction as serving_default.
    check_robustness_outputs(by_signature["robustness"], model, x)
    default = by_signature["serving_default"]
    np.testing.assert_array_equal(
        by_signature["robustness"]["predicted_class"], default["predicted_class"]
    )
    np.testing.assert_allclose(
        by_signature["robustness"]["confidence"], default["confidence"], atol=1e-6
    )


def test_refuses_to_overwrite_a_version(exports, vanilla):
    path = exports["raw"][0]
    before = os.stat(os.path.join(path, "saved_model.pb")).st_mtime_ns
    with pytest.raises(FileExistsError, match="already exists"):
        export.export_saved_model(vanilla, exports["base"], name="mlp", version=1, eps_max=0.3)
    assert os.stat(os.path.join(path, "saved_model.pb")).st_mtime_ns == before


def cheap_attack(model, x, labels=None, **settings):
    """Stands in for the attack where only the write protocol is tested."""
    n = tf.shape(x)[0]
    return tf.zeros([n]), tf.zeros([n], tf.int32), model(x)


def test_failed_export_leaves_nothing(tmp_path, vanilla, monkeypatch):
    monkeypatch.setattr(saved_model.attack_lib, "growing_radius_attack", cheap_attack)

    def fail(path, payload):
        assert os.path.isfile(
            os.path.join(os.path.dirname(os.path.dirname(path)), "saved_model.pb")
        )
        raise RuntimeError("disk full")

    monkeypatch.setattr(saved_model.atomic, "write_json", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_saved_model(vanilla, str(tmp_path), name="m", eps_max=0.3)
    assert os.listdir(tmp_path / "m") == []


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import tensorflow as tf
    from aradals_tf import atomic, attack, backbones, export
    def hang(path, payload):
        print("SAVEDMODEL_WRITTEN", flush=True)
        time.sleep(120)
    def cheap_attack(model, x, labels=None, **settings):
        n = tf.shape(x)[0]
        return tf.zeros([n]), tf.zeros([n], tf.int32), model(x)
    atomic.write_json = hang
    attack.growing_radius_attack = cheap_attack
    export.export_saved_model(backbones.mlp((8, 8, 1), 10), sys.argv[1], name="m", eps_max=0.3)
    """
)


def test_killed_export_leaves_no_version(tmp_path):
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    base = tmp_path / "base"
    process = subprocess.Popen(
        [sys.executable, str(script), str(base)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert "SAVEDMODEL_WRITTEN" in line
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    entries = os.listdir(base / "m")
    # Killed while the SavedModel was complete but not yet renamed into place:
    # only a hidden partial directory, which TF Serving does not load.
    assert len(entries) == 1 and entries[0].startswith(".1.partial-"), entries
    assert os.path.isfile(base / "m" / entries[0] / "saved_model.pb")
    assert export.list_versions(str(base / "m")) == []
    assert export.next_version(str(base), "m") == 1
    with pytest.raises(FileNotFoundError, match="no SavedModel"):
        export.resolve_saved_model(str(base / "m"))


def test_api_errors(tmp_path, vanilla, digits):
    _, (xv, yv), _ = digits
    base = str(tmp_path)
    with pytest.raises(ValueError, match="needs validation_data"):
        export.export_saved_model(vanilla, base, name="m", calibration="temperature", eps_max=0.3)
    with pytest.raises(ValueError, match="calibration must be one of"):
        export.export_saved_model(vanilla, base, name="m", calibration="platt", eps_max=0.3)
    with pytest.raises(ValueError, match="class_names has 3 names"):
        export.export_saved_model(vanilla, base, name="m", class_names=["a", "b", "c"], eps_max=0.3)
    with pytest.raises(ValueError, match="Model name"):
        export.export_saved_model(vanilla, base, name="../evil", eps_max=0.3)
    with pytest.raises(ValueError, match="eps_max"):
        export.export_saved_model(vanilla, base, name="m")
    with pytest.raises(ValueError, match="images have shape"):
        export.export_saved_model(
            vanilla,
            base,
            name="m",
            calibration="temperature",
            validation_data=(xv[:, :4], yv),
            eps_max=0.3,
        )
    probabilities = keras.Sequential([vanilla, keras.layers.Softmax()])
    with pytest.raises(ValueError, match="probabilities"):
        export.export_saved_model(probabilities, base, name="m", eps_max=0.3, input_shape=(8, 8, 1))
    assert not os.listdir(tmp_path)


def test_validation_data_forms_agree(vanilla, digits):
    _, (xv, yv), _ = digits
    reference = saved_model._validation_logits(vanilla, (xv, yv), (8, 8, 1))
    np.testing.assert_allclose(reference[0], logits_of(vanilla, xv), atol=1e-5)
    np.testing.assert_array_equal(reference[1], yv)
    dataset = tf.data.Dataset.from_tensor_slices((xv, yv))
    for form in (dataset, dataset.batch(64), {"logits": reference[0], "labels": yv}):
        logits, labels = saved_model._validation_logits(vanilla, form, (8, 8, 1))
        np.testing.assert_allclose(logits, reference[0], atol=1e-5)
        np.testing.assert_array_equal(labels, yv)


def test_exports_a_logit_ensemble(tmp_path, digits, vanilla, monkeypatch):
    from aradals_tf import ensemble as ensemble_lib

    _, (xv, yv), x = digits
    keras.utils.set_random_seed(2)
    other = backbones.mlp((8, 8, 1), 10)
    ensemble = ensemble_lib.LogitEnsemble([vanilla, other])
    # Shapes are found through wrappers of wrappers (backbone -> members).
    wrapped = ensemble_lib.EnsembleARAdaLSModel([backbones.mlp((8, 8, 1), 10)], 10, eps_max=0.3)
    assert saved_model._model_input_shape(wrapped) == (8, 8, 1)
    # The robustness signature is checked on the other exports; skip its cost here.
    monkeypatch.setattr(saved_model.attack_lib, "growing_radius_attack", cheap_attack)
    path = export.export_saved_model(
        ensemble,
        str(tmp_path),
        name="ens",
        calibration="temperature",
        validation_data=(xv, yv),
        eps_max=0.3,
    )
    meta = export.read_metadata(path)
    assert meta["training_method"] == "ensemble"
    assert meta["calibration"]["temperature"] == pytest.approx(
        temperature.fit_temperature(logits_of(ensemble, xv), yv), rel=1e-5
    )
    loaded = tf.saved_model.load(path)
    outputs = {
        k: v.numpy() for k, v in loaded.signatures["serving_default"](images=tf.constant(x)).items()
    }
    check_serving_outputs(outputs, ensemble, x, meta["calibration"]["temperature"])


# ---------------------------------------------------------------- CLI


def run_main(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_cli_export(cli_export, digits, capsys):
    run, base, path, model, out = cli_export
    _, (xv, yv), _ = digits
    meta = export.read_metadata(path)
    assert meta["training_method"] == "ar-adals" and meta["source"]["dataset"] == "digits"
    t = temperature.fit_temperature(logits_of(model, xv), yv)
    assert meta["calibration"]["temperature"] == pytest.approx(t, rel=1e-5)
    assert f"T = {meta['calibration']['temperature']:.4f}" in out and "docker run" in out
    assert f"{100 * meta['calibration']['validation']['ece_after']:.2f} %" in out
    # Same version again: refused; a bad run: one-line error.
    code, out, err = run_main(
        ["export", "--run", str(run), "--base-dir", str(base), "--version", "1"], capsys
    )
    assert (
        code == 1 and err.startswith("Error: ") and "already exists" in err and err.count("\n") == 1
    )
    code, _, err = run_main(["export", "--run", str(run / "nope"), "--base-dir", str(base)], capsys)
    assert code == 1 and "Run directory" in err and "not found" in err


def test_cli_predict_json_request_and_table(cli_export, digits, tmp_path, capsys):
    run, base, path, model, _ = cli_export
    _, _, x = digits
    t = temperature_of(path)
    np.save(tmp_path / "x.npy", x[:5])
    code, out, err = run_main(
        ["predict", "--saved-model", path, "--input", str(tmp_path / "x.npy"), "--json"], capsys
    )
    assert code == 0, err
    rows = json.loads(out)["predictions"]
    assert len(rows) == 5
    assert set(rows[0]) == {
        "probabilities",
        "confidence",
        "predicted_class",
        "logits",
        "predicted_label",
    }
    outputs = {key: np.array([row[key] for row in rows]) for key in rows[0]}
    outputs["probabilities"] = outputs["probabilities"].astype(np.float32)
    outputs["confidence"] = outputs["confidence"].astype(np.float32)
    check_serving_outputs(outputs, model, x[:5], t, list("0123456789"))
    # One PNG (uint8) runs serving_uint8 and gives the same answer; the model
    # directory resolves to its latest version.
    png = tmp_path / "one.png"
    png.write_bytes(tf.io.encode_png(tf.constant(np.round(x[0] * 255).astype(np.uint8))).numpy())
    code, out, err = run_main(
        ["predict", "--saved-model", os.path.dirname(path), "--input", str(png), "--json"], capsys
    )
    assert code == 0, err
    (row,) = json.loads(out)["predictions"]
    np.testing.assert_allclose(row["probabilities"], rows[0]["probabilities"], atol=1e-6)
    code, out, err = run_main(
        ["predict", "--saved-model", path, "--input", str(png), "--request"], capsys
    )
    body = json.loads(out)
    assert body["signature_name"] == "serving_uint8"
    assert np.array_equal(np.array(body["instances"]), np.round(x[:1] * 255))
    code, out, err = run_main(
        ["predict", "--saved-model", path, "--input", str(tmp_path / "x.npy"), "--request"], capsys
    )
    body = json.loads(out)
    assert body["signature_name"] == "serving_default"
    np.testing.assert_array_equal(np.array(body["instances"], np.float32), x[:5])
    # The robustness signature through the CLI, and the human-readable table.
    code, out, err = run_main(
        [
            "predict",
            "--saved-model",
            path,
            "--input",
            str(tmp_path / "x.npy"),
            "--signature",
            "robustness",
            "--json",
        ],
        capsys,
    )
    rows = json.loads(out)["predictions"]
    check_robustness_outputs(
        {k: np.array([row[k] for row in rows]) for k in ("radius", "flipped", "level")},
        model,
        x[:5],
    )
    code, out, err = run_main(
        ["predict", "--saved-model", path, "--input", str(tmp_path / "x.npy")], capsys
    )
    assert (
        code == 0
        and "[serving_default]" in out
        and "confidence" in out
        and len(out.splitlines()) == 7
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda d: np.save(d / "bad.npy", np.zeros((28, 28, 1), np.float32)),
            "has shape (28, 28, 1)",
        ),
        (lambda d: np.save(d / "bad.npy", np.zeros((2, 8, 8, 1), np.int64)), "dtype int64"),
        (lambda d: np.save(d / "bad.npy", np.full((8, 8, 1), 255.0, np.float32)), "divide by 255"),
        (lambda d: (d / "bad.png").write_bytes(b"not an image"), "Cannot decode"),
        (
            lambda d: (d / "bad.png").write_bytes(
                tf.io.encode_png(tf.zeros((9, 9, 3), tf.uint8)).numpy()
            ),
            "pass --resize",
        ),
        (lambda d: None, "not found"),
    ],
)
def test_cli_predict_input_errors(cli_export, tmp_path, capsys, make, message):
    make(tmp_path)
    bad = tmp_path / ("bad.png" if (tmp_path / "bad.png").exists() else "bad.npy")
    code, out, err = run_main(
        ["predict", "--saved-model", cli_export[2], "--input", str(bad)], capsys
    )
    assert code == 1 and err.startswith("Error: ") and message in err, err
    assert err.count("\n") == 1


def test_cli_predict_resize_and_missing_model(cli_export, tmp_path, capsys):
    image = tf.io.encode_png(tf.fill((16, 16, 3), tf.constant(200, tf.uint8))).numpy()
    (tmp_path / "big.png").write_bytes(image)
    code, out, err = run_main(
        [
            "predict",
            "--saved-model",
            cli_export[2],
            "--input",
            str(tmp_path / "big.png"),
            "--resize",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    assert len(json.loads(out)["predictions"]) == 1
    code, _, err = run_main(
        ["predict", "--saved-model", str(tmp_path / "none"), "--input", "x.npy"], capsys
    )
    assert code == 1 and "SavedModel directory" in err


@pytest.mark.skipif(
    not os.environ.get("TF_SERVING_URL"), reason="set TF_SERVING_URL to a served model's URL"
)
def test_live_tf_serving_endpoint():
    """Against a real TF Serving: TF_SERVING_URL=http://HOST:8501/v1/models/NAME
    serving a model exported by `aradals-tf export`."""
    url = os.environ["TF_SERVING_URL"].rstrip("/")
    with urllib.request.urlopen(f"{url}/metadata", timeout=30) as response:
        meta = json.load(response)
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    dims = signature["inputs"]["images"]["tensor_shape"]["dim"]
    shape = [int(d["size"]) for d in dims[1:]]
    x = np.random.default_rng(0).random((3, *shape)).astype(np.float32)
    request = json.dumps(export.rest_request(x, "serving_default")).encode()
    with urllib.request.urlopen(
        urllib.request.Request(f"{url}:predict", data=request), timeout=60
    ) as response:
        rows = json.load(response)["predictions"]
    probabilities = np.array([row["probabilities"] for row in rows])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        [row["confidence"] for row in rows], probabilities.max(axis=1), atol=1e-6
    )
    assert [row["predicted_class"] for row in rows] == list(probabilities.argmax(axis=1))
    request = json.dumps(export.rest_request(x, "robustness")).encode()
    with urllib.request.urlopen(
        urllib.request.Request(f"{url}:predict", data=request), timeout=300
    ) as response:
        rows = json.load(response)["predictions"]
    assert all((row["radius"] > 0) == row["flipped"] for row in rows)
