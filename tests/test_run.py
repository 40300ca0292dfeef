"""The run policy as library code: fastmlp.run.prepare does what `fastmlp train` does."""
import numpy as np
import pytest
from click.testing import CliRunner

from fastmlp import cli, run
from fastmlp.errors import ConfigError, DataError
from fastmlp.model import MLP


@pytest.fixture
def blobs_file(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    X = (np.eye(3, 6)[y] * 3 + rng.normal(0, 1, (90, 6))).astype(np.float32)
    np.savez(tmp_path / "blobs.npz", X=X, y=y)
    return tmp_path / "blobs.npz"


def test_prepare_then_fit_is_bit_identical_to_the_cli(blobs_file, tmp_path):
    args = ["train", "--data", str(blobs_file), "--hidden", "7", "--epochs", "3", "--val-split", "0.2",
            "--seed", "4", "--threads", "1", "--save", str(tmp_path / "cli.npz"), "--quiet"]
    assert CliRunner().invoke(cli.main, args).exit_code == 0
    plan = run.prepare(blobs_file, hidden=[7], epochs=3, val_split=0.2, seed=4, threads=1, progress=False)
    assert (plan.y.shape[0], plan.validation[1].shape[0]) == (72, 18)
    plan.trainer.fit(plan.X, plan.y, plan.epochs, validation=plan.validation, verbose=False)
    assert np.array_equal(plan.trainer.net.params, MLP.load(tmp_path / "cli.npz").params)


def test_resume_keeps_the_checkpoint_settings_and_rejects_others(blobs_file, tmp_path):
    plan = run.prepare(blobs_file, hidden=[5], lr=0.05, epochs=2, threads=1, progress=False)
    plan.trainer.fit(plan.X, plan.y, 1, verbose=False)
    plan.trainer.save_checkpoint(tmp_path / "ck.npz", extra_meta={"run": plan.record})
    resumed = run.prepare(resume=tmp_path / "ck.npz", progress=False)
    assert resumed.epochs == 2 and resumed.trainer.lr == 0.05 and resumed.trainer.net.sizes == [6, 5, 3]
    assert resumed.data == str(blobs_file)
    with pytest.raises(ConfigError, match=r"^lr 0.1 conflicts with the checkpoint"):
        run.prepare(resume=tmp_path / "ck.npz", lr=0.1, progress=False)
    with pytest.raises(ConfigError, match="epochs 0: the checkpoint .* has reached epoch 1 already"):
        run.prepare(resume=tmp_path / "ck.npz", epochs=0, progress=False)


def test_settings_and_labels_are_checked(blobs_file, tmp_path):
    with pytest.raises(ConfigError, match="val_split 0.001 holds out 0 of 90 samples"):
        run.prepare(blobs_file, val_split=0.001, progress=False)
    with pytest.raises(ConfigError, match="loss ce needs output softmax"):
        run.prepare(blobs_file, output="sigmoid", progress=False)
    np.savez(tmp_path / "bad.npz", X=np.zeros((4, 2), np.float32), y=np.array([0, 1, 0.5, 1]))
    with pytest.raises(DataError, match="labels of .* are not integers"):
        run.prepare(tmp_path / "bad.npz", progress=False)
    np.savez(tmp_path / "one.npz", X=np.zeros((4, 2), np.float32), y=np.zeros(4, np.int64))
    with pytest.raises(DataError, match="1 class"):
        run.prepare(tmp_path / "one.npz", progress=False)
