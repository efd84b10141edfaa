"""setup_logger: each call replaces the previous call's handlers (one run, one log file)."""

import logging

from reid_plugins.utils.logger import setup_logger


def _read(path):
    with open(path) as f:
        return f.read()


def test_successive_runs_log_once_and_only_to_their_own_file(tmp_path, capsys):
    name = "reid_plugins_test_logger_runs"
    foreign = logging.NullHandler()  # installed by someone else: must survive
    logging.getLogger(name).addHandler(foreign)
    log = setup_logger(str(tmp_path / "run1"), name=name)
    log.info("message of run 1")
    log = setup_logger(str(tmp_path / "run2"), name=name)
    log.info("message of run 2")
    for h in log.handlers:
        h.flush()
    run1, run2 = _read(tmp_path / "run1" / "log.txt"), _read(tmp_path / "run2" / "log.txt")
    assert run1.count("message of run 1") == 1 and "message of run 2" not in run1
    assert run2.count("message of run 2") == 1 and "message of run 1" not in run2
    assert capsys.readouterr().out.count("message of run 2") == 1  # one console handler
    assert foreign in log.handlers
    kinds = [type(h).__name__ for h in log.handlers if h is not foreign]
    assert sorted(kinds) == ["FileHandler", "StreamHandler"]


def test_same_arguments_twice_keep_one_configuration(tmp_path):
    name = "reid_plugins_test_logger_same"
    setup_logger(str(tmp_path), name=name)
    log = setup_logger(str(tmp_path), name=name)
    log.warning("once")
    for h in log.handlers:
        h.flush()
    assert _read(tmp_path / "log.txt").count("once") == 1
    assert len(log.handlers) == 2


def test_rank_above_zero_writes_its_own_file_without_console(tmp_path, capsys):
    name = "reid_plugins_test_logger_rank"
    log = setup_logger(str(tmp_path), distributed_rank=1, name=name)
    log.info("from rank 1")
    for h in log.handlers:
        h.flush()
    assert "from rank 1" in _read(tmp_path / "log.txt.rank1")
    assert "from rank 1" not in capsys.readouterr().out
