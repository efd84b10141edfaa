"""The README's code examples and commands stay true."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
    with open(os.path.join(REPO, "README.md")) as f:
        return f.read()


def test_readme_backbone_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", _readme(), flags=re.S)
    example = [b for b in blocks if "BACKBONE_REGISTRY.register()" in b]
    assert example, "README lost its backbone registration example"
    from reid_plugins.modeling import BACKBONE_REGISTRY

    if "build_my_backbone" in BACKBONE_REGISTRY:  # re-run in the same process
        BACKBONE_REGISTRY._obj_map.pop("build_my_backbone")
    exec(compile(example[0], "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    assert "loss_cls" in out and "loss_triplet" in out


def test_ci_runs_the_readme_test_command():
    with open(os.path.join(REPO, ".ci", "run")) as f:
        ci = f.read()
    cmds = re.findall(r"```bash\n(.*?)```", _readme(), flags=re.S)
    test_cmd = [c.strip() for c in cmds if "pytest" in c and c.strip().count("\n") == 0]
    assert test_cmd, "README must show the one-line test command"
    assert test_cmd[0] in ci


def test_readme_commands_point_at_existing_files():
    text = _readme()
    main = re.findall(r"```bash\npip install -e \. && python (\S+)", text)
    assert main and os.path.isfile(os.path.join(REPO, main[0])), "main job script missing"
    configs = re.findall(r"--config-file (projects/[\w/.-]+\.yaml)", text)
    assert configs
    for path in configs:
        assert os.path.isfile(os.path.join(REPO, path)), path


def _all_readmes():
    paths = [os.path.join(REPO, "README.md")]
    projects = os.path.join(REPO, "projects")
    paths += sorted(
        os.path.join(projects, d, "README.md")
        for d in os.listdir(projects)
        if os.path.isfile(os.path.join(projects, d, "README.md"))
    )
    return paths


def test_every_project_folder_has_a_readme():
    projects = os.path.join(REPO, "projects")
    for d in os.listdir(projects):
        if os.path.isdir(os.path.join(projects, d)):
            assert os.path.isfile(os.path.join(projects, d, "README.md")), d


def test_every_readme_names_existing_configs_tools_and_pictures():
    for readme in _all_readmes():
        with open(readme) as f:
            text = f.read()
        here = os.path.dirname(readme)
        for path in re.findall(r"(?<![\w/])((?:projects|tools)/[\w/.-]+\.(?:yaml|py))", text):
            assert os.path.isfile(os.path.join(REPO, path)), f"{readme}: {path}"
        for link in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text):
            assert os.path.isfile(os.path.normpath(os.path.join(here, link))), f"{readme}: {link}"


def test_every_relative_link_of_the_readmes_exists():
    """``[text](path)`` links to files of the repository (docs pages, benchmark tables)."""
    for readme in _all_readmes() + [os.path.join(REPO, "datasets", "README.md")]:
        with open(readme) as f:
            text = f.read()
        here = os.path.dirname(readme)
        for link in re.findall(r"(?<!!)\[[^\]]*\]\(([^)\s#]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+://", link):
                continue
            assert os.path.exists(os.path.normpath(os.path.join(here, link))), f"{readme}: {link}"
