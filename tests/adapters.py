"""Random LoRA adapters for the tiny model: strong enough to change greedy answers."""

import torch
from peft import LoraConfig, get_peft_model


def random_adapter(model_dir, out, seed: int) -> str:
    from trainer.models import load_causal_lm

    torch.manual_seed(seed)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(load_causal_lm(str(model_dir)), config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0)
    peft_model.save_pretrained(out)
    return str(out)
