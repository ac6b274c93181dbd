"""vLLM's fastsafetensors loader: read the checkpoint's shards in natural (numeric) order.

For the MXFP4 image (localhost/sparkctl-vllm-mxfp4), built from the vLLM MXFP4 fork. The loader
groups `hf_weights_files` as it receives them, in the order the filesystem listed them, so
model-00010-of-00012 can be read before model-00002-of-00012; the fork's MXFP4 weight handling
expects the shards in order. Later vLLM sorts them the same way itself ("in effect").
Applied with `srcfix.py fixes/vllm-fastsafetensors-order.py VLLM_SOURCE_DIR` before the build.
"""

from __future__ import annotations

from srcfix import Edit

WEIGHT_UTILS = "vllm/model_executor/model_loader/weight_utils.py"
MARK = "# sparkctl: shards in natural order\n"
SORT = "hf_weights_files = sorted(hf_weights_files, key=_sparkctl_natural_key)"

KEY = '''\
def _sparkctl_natural_key(path: str) -> list[object]:
    """model-00002-of-00012.safetensors -> ['model-', 2, '-of-', 12, '.safetensors']: numbers
    compare as numbers. re.split with a group alternates text and digits, so the parts of two
    keys always compare like with like."""
    import re as _re

    return [int(p) if p.isdigit() else p for p in _re.split(r"(\\d+)", os.path.basename(path))]


'''

EDITS = [
    Edit(
        what="a natural sort key for shard file names",
        paths=(WEIGHT_UTILS,),
        pattern=r"^(?=def fastsafetensors_weights_iterator\()",
        replacement=lambda _: KEY,  # literal text, not a template
        # ours, or upstream's own sort (which brings its own key)
        done=(
            r"^def _sparkctl_natural_key\("
            r"|^[ \t]+hf_weights_files = sorted\(hf_weights_files, key=_natural_sort_key\)"
        ),
    ),
    Edit(
        what="fastsafetensors reads the shards in natural order",
        paths=(WEIGHT_UTILS,),
        # The grouping of files per rank, inside fastsafetensors_weights_iterator.
        pattern=r"^(?P<indent>[ \t]+)(?=weight_files_sub_lists = \[\n\s*hf_weights_files\[)",
        replacement=lambda m: f"{m['indent']}{MARK}{m['indent']}{SORT}\n{m['indent']}",
        done=(
            r"^[ \t]+hf_weights_files = sorted\(hf_weights_files, "
            r"key=_(?:sparkctl_natural_key|natural_sort_key)\)\n[ \t]+weight_files_sub_lists = \["
        ),
    ),
]
