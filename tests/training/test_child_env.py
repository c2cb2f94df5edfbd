"""A training child inherits only what a stage needs from the worker's environment."""

from training.tasks import child_env


def test_the_platforms_secrets_do_not_reach_a_training_child(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "s3cret")
    monkeypatch.setenv("DATABASE_URL", "postgres://user:pw@db/prod")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws")
    env = child_env()
    assert {"SECRET_KEY", "DATABASE_URL", "AWS_SECRET_ACCESS_KEY"} & set(env) == set()


def test_the_ml_stacks_settings_reach_a_training_child(monkeypatch):
    monkeypatch.setenv("HF_HOME", "/data/hf")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    env = child_env()
    assert (env["HF_HOME"], env["OMP_NUM_THREADS"], env["CUDA_VISIBLE_DEVICES"]) == (
        "/data/hf",
        "2",
        "1",
    )
    assert env["PYTHONUNBUFFERED"] == "1"
    assert "PATH" in env
