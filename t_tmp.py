import sys, cProfile, pstats, tempfile
sys.path.insert(0, 'tests/hardening')
from pathlib import Path
import bombs
from verifier.compare import compare_paths
root = Path(tempfile.mkdtemp())
a, b = bombs.zip_pair(root, members=6)
cProfile.run('r = compare_paths(a, b)', '/tmp/prof.out')
print(r.verdict, r.stats)
pstats.Stats('/tmp/prof.out').sort_stats('cumtime').print_stats(18)
