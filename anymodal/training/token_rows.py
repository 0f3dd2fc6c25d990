"""Train only the embedding rows of anymodal's new tokens; the vocabulary matrices stay frozen.

Why not a gradient mask on the whole embedding weight (FROMAGe's way)? That keeps optimizer state and
checkpoints of the full [V, D] matrices (hundreds of MB for a 7B LLM) to train a few rows, and weight decay
would still move the frozen rows. Instead the rows live in their own small parameters and forward hooks
put them in place: the input embedding's output at those ids, and the output head's logits of those ids.
``write_back`` copies them into the LLM's weights, where the bundle's new_tokens.safetensors reads them.
(peft's ``trainable_token_indices`` does the same inside a PeftModel, but only when the adapter is created
with it and it keeps the rows apart from the base weights the bundle saves.)
"""

from __future__ import annotations

import torch
from torch import nn

from ..llm import set_token_rows, token_rows


class TrainableTokenRows(nn.Module):
    def __init__(self, base_llm: nn.Module, ids: list[int]):
        super().__init__()
        embedding, head = base_llm.get_input_embeddings(), base_llm.get_output_embeddings()
        self.base_llm = [base_llm]  # a list: not a submodule, its weights are not ours
        self.token_ids = list(ids)
        rows = token_rows(base_llm, self.token_ids)
        self.input_rows = nn.Parameter(rows["input"].float())  # [n, D]
        self.output_rows = nn.Parameter(rows["output"].float()) if "output" in rows else None  # [n, D], untied head
        lookup = torch.full((embedding.num_embeddings,), -1, dtype=torch.long)  # [V] token id -> row, -1 = not ours
        lookup[self.token_ids] = torch.arange(len(self.token_ids))
        self.register_buffer("lookup", lookup, persistent=False)
        self.register_buffer("ids", torch.tensor(self.token_ids), persistent=False)
        self._hooks = [embedding.register_forward_hook(self._embed_hook),
                       head.register_forward_hook(self._head_hook)]

    def _embed_hook(self, module, args, embeds: torch.Tensor) -> torch.Tensor:  # embeds [B, L, D]
        row = self.lookup[args[0]]  # [B, L]
        ours = self.input_rows[row.clamp(min=0)].to(embeds.dtype)  # [B, L, D]
        return torch.where((row >= 0)[..., None], ours, embeds)

    def _head_hook(self, module, args, logits: torch.Tensor) -> torch.Tensor:  # logits [B, L, V]
        rows = self.input_rows if self.output_rows is None else self.output_rows
        ours = args[0] @ rows.to(args[0].dtype).T  # [B, L, n]
        return logits.index_copy(-1, self.ids, ours.to(logits.dtype))

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the trained rows into the LLM's weights and remove the hooks (the model is plain again)."""
        rows = {"input": self.input_rows.detach()}
        if self.output_rows is not None:
            rows["output"] = self.output_rows.detach()
        set_token_rows(self.base_llm[0], self.token_ids, rows)
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
