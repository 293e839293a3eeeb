"""A user's own data and model through the command line: an image folder end
to end, a Keras classifier trained outside the package, bad inputs, and the
evaluation report."""

import base64
import html.parser
import io
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import reference
from PIL import Image

from aradals_tf import cli
from aradals_tf import data
from aradals_tf import temperature


def run_main(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def _write_folder(root, images, labels):
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.round(image[..., 0] * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{index:05d}.png")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """40 real mnist5k digits per class as PNG files in 10 class subfolders,
    and the same images, in the folder's order, as a .npz of arrays."""
    root = tmp_path_factory.mktemp("user")
    images, labels = data.load_arrays("mnist5k", "train", seed=0)
    keep = np.concatenate([np.where(labels == c)[0][:40] for c in range(10)])
    images, labels = images[keep], labels[keep]
    _write_folder(root / "digits", images, labels)
    # The folder's order: class folders in name order, files in name order.
    order = np.lexsort((np.arange(len(labels)), labels))
    quantized = np.round(images[order] * 255).astype(np.uint8)
    np.savez(root / "arrays.npz", x=quantized, y=labels[order])
    return root


def test_an_image_folder_end_to_end(folder, capsys, tmp_path):
    """Acceptance: train, evaluate --report, export and predict on a folder;
    the metrics equal those of the same images loaded as arrays."""
    run = str(tmp_path / "run")
    code, out, err = run_main(
        ["train", "--data", str(folder / "digits"), "--epochs", "3", "--out", run], capsys
    )
    assert code == 0, err
    code, folder_out, err = run_main(["evaluate", "--run", run, "--report"], capsys)
    assert code == 0, err
    # The same model on the same images as arrays: the same split, the same metrics.
    code, arrays_out, err = run_main(
        [
            "evaluate",
            "--model",
            os.path.join(run, "model.keras"),
            "--data",
            str(folder / "arrays.npz"),
            "--model-run",
            str(tmp_path / "arrays"),
        ],
        capsys,
    )
    assert code == 0, err
    with open(os.path.join(run, "metrics.json")) as stream:
        from_folder = json.load(stream)
    with open(tmp_path / "arrays" / "metrics.json") as stream:
        from_arrays = json.load(stream)
    for kind in ("raw", "temperature"):
        for key, value in from_folder["results"]["clean"][kind].items():
            assert from_arrays["results"]["clean"][kind][key] == pytest.approx(value, abs=1e-6)
    assert os.path.isfile(os.path.join(run, "report.html"))
    saved = tmp_path / "saved"
    code, out, err = run_main(["export", "--run", run, "--base-dir", str(saved)], capsys)
    assert code == 0, err
    x = data.load_arrays(str(folder / "digits"), "test")[0][:3]
    np.save(tmp_path / "x.npy", x)
    code, out, err = run_main(
        ["predict", "--saved-model", str(saved / "run"), "--input", str(tmp_path / "x.npy")],
        capsys,
    )
    assert code == 0, err


@pytest.fixture(scope="module")
def outside_model(tmp_path_factory):
    """A plain keras.Sequential ending in a softmax, trained on digits, saved."""
    root = tmp_path_factory.mktemp("outside")
    x, y = data.load_arrays("digits", "train")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=5, verbose=0)
    path = str(root / "classifier.keras")
    model.save(path)
    return model, path, root


_TF1 = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    tf.compat.v1.disable_eager_execution()
    x = np.load(sys.argv[2])
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], sys.argv[1])
        signature = meta.signature_def["serving_default"]
        out = sess.run(signature.outputs["probabilities"].name,
                       {signature.inputs["images"].name: x})
    np.save(sys.argv[3], out)
    """
)


def test_a_keras_classifier_trained_outside_the_package(outside_model, capsys):
    """Acceptance: evaluate --model reports model.evaluate's accuracy and the NLL
    of its probabilities; export --model serves softmax(logits / T), T fitted
    on the validation split, through the TF1 loader."""
    model, path, root = outside_model
    run = str(root / "run")
    code, out, err = run_main(
        ["evaluate", "--model", path, "--data", "digits", "--model-run", run], capsys
    )
    assert code == 0, err
    assert "logits taken before" in out
    with open(os.path.join(run, "metrics.json")) as stream:
        clean = json.load(stream)["results"]["clean"]["raw"]
    x, y = data.load_arrays("digits", "test")
    keras_accuracy = model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    assert clean["accuracy"] == pytest.approx(keras_accuracy, abs=1e-6)
    probabilities = model.predict(x, verbose=0).astype(np.float64)
    assert clean["nll"] == pytest.approx(reference.nll(y, probabilities), rel=1e-4)
    saved = root / "saved"
    code, out, err = run_main(
        [
            "export",
            "--model",
            path,
            "--data",
            "digits",
            "--base-dir",
            str(saved),
            "--name",
            "mine",
            "--model-run",
            run,
        ],
        capsys,
    )
    assert code == 0, err
    version = saved / "mine" / "1"
    np.save(root / "x.npy", x[:20])
    completed = subprocess.run(
        [sys.executable, "-c", _TF1, str(version), str(root / "x.npy"), str(root / "p.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    logits_model = keras.Model(model.inputs, model.layers[-1].input)
    hidden = logits_model.predict(x[:20], verbose=0)
    dense = model.layers[-1]
    logits = hidden @ dense.get_weights()[0] + dense.get_weights()[1]
    xv, yv = data.load_arrays("digits", "validation")
    val_logits = keras.Model(model.inputs, model.layers[-1].input).predict(xv, verbose=0)
    val_logits = val_logits @ dense.get_weights()[0] + dense.get_weights()[1]
    fitted = temperature.fit_temperature(val_logits.astype(np.float32), yv)
    want = reference.softmax((logits / fitted).astype(np.float64))
    np.testing.assert_allclose(np.load(root / "p.npy"), want, atol=1e-5)
    with open(version / "assets.extra" / "aradals_tf.json") as stream:
        meta = json.load(stream)
    assert meta["source"]["model"] == os.path.abspath(path)


def _lambda_model(root):
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Lambda(lambda t: t[:, :10] * 2.0)(flat)
    path = str(root / "lambda.keras")
    keras.Model(inputs, outputs).save(path)
    return path


def _bad_inputs(root):
    """(name, command) pairs that must fail with one line."""
    (root / "empty").mkdir()
    images, labels = data.load_arrays("digits", "train")
    _write_folder(root / "single", images[:5], np.zeros(5, int))
    _write_folder(root / "mixed", images[:20], labels[:20] % 2)
    Image.new("L", (12, 12)).save(root / "mixed" / "class0" / "big.png")
    _write_folder(root / "broken", images[:20], labels[:20] % 2)
    (root / "broken" / "class1" / "bad.png").write_bytes(b"not an image")
    np.savez(root / "negative.npz", x=images[:30], y=np.arange(30) % 3 - 1)
    keras.utils.set_random_seed(0)
    five = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])
    five.save(root / "five.keras")
    wide = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    wide.save(root / "wide.keras")
    flat = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Dense(10)])
    flat.save(root / "flat.keras")
    model = ["evaluate", "--model"]
    return {
        "empty folder": ["train", "--data", str(root / "empty"), "--out", str(root / "r")],
        "single class": ["train", "--data", str(root / "single"), "--out", str(root / "r")],
        "mixed sizes": ["train", "--data", str(root / "mixed"), "--out", str(root / "r")],
        "unreadable file": ["train", "--data", str(root / "broken"), "--out", str(root / "r")],
        "unknown tfds name": ["train", "--data", "tfds:mnistt", "--out", str(root / "r")],
        "labels out of range": [
            "train",
            "--data",
            str(root / "negative.npz"),
            "--out",
            str(root / "r"),
        ],
        "classes do not match": model + [str(root / "five.keras"), "--data", "digits"],
        "wrong input shape": model + [str(root / "wide.keras"), "--data", "digits"],
        "no per-class scores": model + [str(root / "flat.keras"), "--data", "digits"],
        "a Lambda layer": model + [_lambda_model(root), "--data", "digits"],
    }


def test_bad_inputs_give_one_line_and_a_non_zero_exit(tmp_path, capsys):
    messages = {
        "empty folder": "holds no images",
        "single class": "single class",
        "mixed sizes": "--image-size",
        "unreadable file": "Cannot read image",
        "unknown tfds name": "close ones: mnist",
        "labels out of range": "labels must be in 0..K-1",
        "classes do not match": "outputs 5 classes; the data has 10",
        "wrong input shape": "does not take the data's images",
        "no per-class scores": "per-class scores",
        "a Lambda layer": "--unsafe-load",
    }
    for name, command in _bad_inputs(tmp_path).items():
        code, out, err = run_main(command, capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code != 0, name
        assert len(lines) == 1 and lines[0].startswith("Error: "), (name, err)
        assert messages[name] in lines[0], (name, lines[0])
    # The flag trusts the file: the Lambda model loads and evaluates.
    code, out, err = run_main(
        [
            "evaluate",
            "--model",
            str(tmp_path / "lambda.keras"),
            "--data",
            "digits",
            "--unsafe-load",
            "--model-run",
            str(tmp_path / "trusted"),
        ],
        capsys,
    )
    assert code == 0, err


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.urls = [], [], []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs:
                self.urls.append(attrs[key])
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_data(self, text):
        if self._cell is not None:
            self._cell += text

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None


def test_the_report_holds_what_evaluate_printed(outside_model, capsys, tmp_path):
    """Acceptance: a real HTML parser reads the report; every embedded image
    decodes; the metrics table holds the numbers evaluate printed; nothing
    refers to an external URL. With robustness run first, its table too."""
    _, path, _ = outside_model
    run = str(tmp_path / "run")
    code, _, err = run_main(
        ["robustness", "--model", path, "--data", "digits", "--model-run", run, "--steps", "3"],
        capsys,
    )
    assert code == 0, err
    code, out, err = run_main(
        [
            "evaluate",
            "--run",
            run,
            "--shift",
            "contrast:2",
            "--shift",
            "gaussian_noise:5",
            "--each-shift",
            "--report",
        ],
        capsys,
    )
    assert code == 0, err
    page = _Page()
    page.feed(open(os.path.join(run, "report.html")).read())
    assert len(page.images) == 3  # reliability, ECE by severity, calibration by robustness
    for source in page.images:
        assert source.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).verify()
    assert all(url.startswith("data:") for url in page.urls)
    printed = [line.split() for line in out.splitlines()]
    metrics_table = page.tables[0]
    header, *rows = metrics_table
    assert header[0] == "condition"
    for row in rows:
        # The printed line of this row: the same cells, in the same order.
        label, calibration, *cells = row
        words = label.split()
        matches = [p for p in printed if p[: len(words)] == words and p[-len(cells) :] == cells]
        assert matches, row
    assert len(rows) == 2 * 3 + 2  # clean and two shifts, raw and TS; the shift mean
    markdown = open(os.path.join(run, "report.md")).read()
    assert rows[0][2] in markdown and "data:image/png;base64," in markdown
