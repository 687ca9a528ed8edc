"""One rank of tests/test_fsdp.py: shard a tiny Qwen2 with FSDP2 over gloo, take one step, save it
through alignflow's model door (python -m torch.distributed.run ... fsdp_save_worker.py OUT)."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from alignflow.models.loading import load_causal_lm, load_tokenizer, resolve_placement, save_model

out = Path(sys.argv[1])
dist.init_process_group("gloo")
model = load_causal_lm(str(out / "base"), resolve_placement("cpu", "float32"), trainable=True)
for layer in model.model.layers:
    fully_shard(layer)
fully_shard(model)
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
torch.manual_seed(0)
ids = torch.randint(0, model.config.vocab_size, (2, 8))
model(input_ids=ids, labels=ids).loss.backward()
optimizer.step()
local = {name: p.to_local().clone() for name, p in model.named_parameters()}
torch.save(local, out / f"shard-{dist.get_rank()}.pt")
save_model(model, load_tokenizer(str(out / "base")), out / "saved")
dist.barrier()
dist.destroy_process_group()
