import sys; sys.path.insert(0,'tests/verifier/compare'); sys.path.append('tests')
from pathlib import Path
import tempfile
from compare_corpus import build_artefacts, make_base_spec, FileSpec
from verifier.compare import compare_paths
root=Path(tempfile.mkdtemp())
art=build_artefacts(root)
base=make_base_spec(art)
a=art.image(base,'a.eif')
b=art.image(base.with_file("usr/bin/tool", FileSpec(art.elf, perm=0o755)),'b.eif')
r=compare_paths(a,b)
for n in r.root.walk():
    print('/'.join(n.path[1:]), n.change.value, n.significance.value, [(h.cause.value,h.confidence.value,h.evidence[:110]) for h in n.causes if not h.matched.startswith('below')][:2])
