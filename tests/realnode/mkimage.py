#!/usr/bin/env python3
"""Writes a docker-archive image tar (what `ctr images import` reads) from
layers, with no registry and no container engine.

usage: mkimage.py OUT.tar TAG [--layer DIR_OR_TAR]... [--entrypoint JSON]
                  [--cmd JSON] [--env K=V]... [--user U] [--workdir D]
                  [--expose PORT]... [--label K=V]...

A DIR is archived as a layer: sorted, owner root unless --owner PATH=UID:GID
says otherwise, mtimes zeroed, so the same files give the same digest. A
path ending in .tar is taken as a finished layer. The image config is printed
as JSON on stdout (tests compare it with the Dockerfile).
"""
import argparse
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("tag")
p.add_argument("--layer", action="append", default=[])
p.add_argument("--owner", action="append", default=[], help="PATH=UID:GID inside the layer (recursive)")
p.add_argument("--entrypoint")
p.add_argument("--cmd")
p.add_argument("--env", action="append", default=[])
p.add_argument("--user")
p.add_argument("--workdir")
p.add_argument("--expose", action="append", default=[])
p.add_argument("--label", action="append", default=[])
a = p.parse_args()

owners = []
for o in a.owner:
    path, ids = o.split("=", 1)
    uid, gid = ids.split(":")
    owners.append((path.strip("/"), int(uid), int(gid)))


def owner_of(arc):
    for path, uid, gid in owners:
        if arc == path or arc.startswith(path + "/"):
            return uid, gid
    return 0, 0


def dir_layer(root, out):
    def reset(ti):
        ti.uid, ti.gid = owner_of(ti.name)
        ti.uname = ti.gname = ""
        ti.mtime = 0
        return ti

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        for base, dirs, files in os.walk(root):
            dirs.sort()
            files.sort()
            for name in dirs + files:
                full = os.path.join(base, name)
                t.add(full, arcname=os.path.relpath(full, root), recursive=False, filter=reset)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


tmp = tempfile.mkdtemp(prefix="mkimage.")
try:
    layers = []
    for i, src in enumerate(a.layer):
        if src.endswith(".tar") and os.path.isfile(src):
            path = src
        else:
            path = os.path.join(tmp, f"layer{i}.tar")
            dir_layer(src, path)
        layers.append((sha256_file(path), path))
    cfg = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env}
    if a.entrypoint:
        cfg["Entrypoint"] = json.loads(a.entrypoint)
    if a.cmd:
        cfg["Cmd"] = json.loads(a.cmd)
    if a.user:
        cfg["User"] = a.user
    if a.workdir:
        cfg["WorkingDir"] = a.workdir
    if a.expose:
        cfg["ExposedPorts"] = {(e if "/" in e else e + "/tcp"): {} for e in a.expose}
    if a.label:
        cfg["Labels"] = dict(kv.split("=", 1) for kv in a.label)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + d for d, _ in layers]},
        },
        sort_keys=True,
    ).encode()
    cdig = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [{"Config": cdig + ".json", "RepoTags": [a.tag], "Layers": [d + "/layer.tar" for d, _ in layers]}]
    ).encode()
    part = a.out + ".part"
    with tarfile.open(part, "w") as t:
        ti = tarfile.TarInfo(cdig + ".json")
        ti.size = len(config)
        t.addfile(ti, io.BytesIO(config))
        for d, path in layers:
            t.add(path, arcname=d + "/layer.tar", recursive=False,
                  filter=lambda ti: (setattr(ti, "mtime", 0), ti)[1])
        ti = tarfile.TarInfo("manifest.json")
        ti.size = len(manifest)
        t.addfile(ti, io.BytesIO(manifest))
    os.replace(part, a.out)
    print(json.dumps(cfg, sort_keys=True))
finally:
    shutil.rmtree(tmp, ignore_errors=True)
