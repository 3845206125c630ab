"""The benchmark suite (`make bench`): every scenario beside a raw baseline, in one run."""
