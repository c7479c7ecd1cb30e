#!/usr/bin/env python3
"""Per-kernel SASS opcode histogram of an Nsight Compute report (gpu-run.sh profile): executed warp
instructions and warp-stall samples by opcode, the picture that tells an instruction-bound kernel's
hot work (Philox IMAD/LOP3, conversions, divisions, branches) from its memory traffic.

    python3 scripts/ncu-summary.py report.ncu-rep [--top 20]
    python3 scripts/ncu-summary.py source.csv      # an export of `ncu --page source --print-source sass --csv`
"""
import collections
import csv
import io
import shutil
import subprocess
import sys


def main(argv):
    if not argv or argv[0].startswith('-'):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    report, top = argv[0], int(argv[argv.index('--top') + 1]) if '--top' in argv else 20
    if report.endswith('.csv'):
        with open(report, newline='') as f:
            text = f.read()
    else:
        ncu = shutil.which('ncu') or '/usr/local/cuda/bin/ncu'
        text = subprocess.run([ncu, '--import', report, '--page', 'source', '--print-source', 'sass', '--csv'],
                              capture_output=True, text=True, check=True).stdout
    rows = list(csv.reader(io.StringIO(text)))
    kernel, header, by_kernel = None, None, collections.OrderedDict()
    for r in rows:
        if len(r) >= 2 and r[0] == 'Kernel Name':
            kernel, header = r[1], None
        elif r and r[0] == 'Address':
            header = r
        elif header and kernel and len(r) == len(header):
            src = r[header.index('Source')].split()
            if not src:
                continue
            op = (src[1] if src[0].startswith('@') and len(src) > 1 else src[0]).split('.')[0]
            try:
                n = int(r[header.index('Instructions Executed')])
                w = int(r[header.index('Warp Stall Sampling (All Samples)')])
            except ValueError:
                continue
            k = by_kernel.setdefault(kernel, (collections.Counter(), collections.Counter()))
            k[0][op] += n
            k[1][op] += w
    for kernel, (ex, st) in by_kernel.items():
        total, samples = sum(ex.values()) or 1, sum(st.values()) or 1
        print(f'{kernel}\n  {total} warp instructions executed, {samples} stall samples')
        for op, n in ex.most_common(top):
            print(f'  {op:10s} {n:12d} {100 * n / total:5.1f} %   stalls {100 * st[op] / samples:5.1f} %')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
