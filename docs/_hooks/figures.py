"""MkDocs hook: the pages link figures as ``../figures/NAME.png`` (so they also render on a plain
checkout or a Git host, relative to ``docs/``); the site serves the repository's ``figures/`` folder
as ``figures/`` inside the documentation, and the links are rewritten to match."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]


def on_files(files, config):
    for png in sorted((ROOT / "figures").glob("*.png")):
        files.append(File(f"figures/{png.name}", src_dir=str(ROOT), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    depth = page.file.src_uri.count("/")
    return markdown.replace("](../figures/", "](" + "../" * depth + "figures/")
