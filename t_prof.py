import sys, cProfile, pstats, tempfile
sys.path.insert(0, 'tests/hardening')
from pathlib import Path
import bombs
from verifier.audit import audit_image, load_policy
root = Path(tempfile.mkdtemp())
eif = bombs.gzip_elf_eif(root, elf_size=100_000_000)
cProfile.run('r = audit_image(eif, load_policy(None))', str(root / 'prof.out'))
pstats.Stats(str(root / 'prof.out')).sort_stats('tottime').print_stats(12)
