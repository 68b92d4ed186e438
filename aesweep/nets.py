"""The autoencoders as plain nn.Modules: what `aesweep.load` returns and what model.py trains.

No Lightning here, so loading a trained network never imports the training machinery.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from aesweep.config import Activation

TORCH_ACTIVATIONS: dict[Activation, type[nn.Module]] = {
    Activation.relu: nn.ReLU,
    Activation.leaky_relu: nn.LeakyReLU,
    Activation.elu: nn.ELU,
    Activation.gelu: nn.GELU,
    Activation.silu: nn.SiLU,
    Activation.sigmoid: nn.Sigmoid,
    Activation.tanh: nn.Tanh,
    Activation.identity: nn.Identity,
}


def mlp(widths: list[int], activation: str) -> nn.Sequential:
    """Linear layers through `widths`, the activation between them but not after the last:
    the code and the output logits stay linear."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if i > 0 and activation != "identity":
            layers.append(TORCH_ACTIVATIONS[Activation(activation)]())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class AutoEncoderNet(nn.Module):
    """x -> z = enc(x) -> x_hat = dec(z); the decoder mirrors the encoder's widths.

    kind=mlp: the MLPs are the encoder and decoder (`hidden=[]` is the lecture's AE).
    kind=residual: z = W_e x + b_e + g(x) and x_hat = W_d z + b_d + h(z), where g and h are
    the MLPs with their last layers starting at zero and the linear path starts at PCA
    (init_from_pca): at step 0 the model IS PCA, and training can only add to it.

    `center=True` subtracts the training mean before encoding and adds it back after decoding
    (PCA's setting). output=clamp clips pixels to [0, 1].
    """

    def __init__(
        self,
        input_dim: int,
        dim_z: int,
        hidden: list[int],
        activation: str = "relu",
        output: str = "sigmoid",
        center: bool = False,
        kind: str = "mlp",
    ) -> None:
        super().__init__()
        self.center, self.output_kind, self.residual = center, output, kind == "residual"
        self.encoder = mlp([input_dim, *hidden, dim_z], activation)
        self.decoder = mlp([dim_z, *reversed(hidden), input_dim], activation)
        self.register_buffer("mean", torch.zeros(input_dim))
        if self.residual:
            self.linear_encoder = nn.Linear(input_dim, dim_z)
            self.linear_decoder = nn.Linear(dim_z, input_dim)
            for branch in (self.encoder, self.decoder):
                nn.init.zeros_(branch[-1].weight)
                nn.init.zeros_(branch[-1].bias)

    @torch.no_grad()
    def init_from_pca(self, mean: Tensor, components: Tensor) -> None:
        """Start the residual model's linear path at PCA: mean (d,), components (k, d)."""
        self.linear_encoder.weight.copy_(components)
        self.linear_encoder.bias.copy_(-(components @ mean))
        self.linear_decoder.weight.copy_(components.T)
        self.linear_decoder.bias.copy_(mean)

    def encode(self, x: Tensor) -> Tensor:
        """Images (n, input_dim) in [0, 1] to codes (n, dim_z)."""
        x = x - self.mean if self.center else x
        z = self.encoder(x)
        return z + self.linear_encoder(x) if self.residual else z

    def decode_logits(self, z: Tensor) -> Tensor:
        """Decoder output before the output activation (what BCE-with-logits needs)."""
        out = self.decoder(z)
        out = out + self.linear_decoder(z) if self.residual else out
        return out + self.mean if self.center else out

    def decode(self, z: Tensor) -> Tensor:
        """Codes (n, dim_z) to pixels (n, input_dim), the output activation applied."""
        return self._output(self.decode_logits(z), leak=0.0)

    def _output(self, out: Tensor, leak: float) -> Tensor:
        """The output activation; `leak` > 0 lets clamp pass that slope outside [0, 1] (in
        training, so the gradient never dies)."""
        if self.output_kind == "sigmoid":
            return torch.sigmoid(out)
        if self.output_kind == "clamp":
            clipped = out.clamp(0, 1)
            return clipped + leak * (out - clipped) if leak else clipped
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def net_settings(cfg: DictConfig, input_dim: int, output: str | None = None) -> dict[str, Any]:
    """AutoEncoderNet's arguments for a job's config; `output` as resolved for the data
    (train.output_for; default: model.output)."""
    model = OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True)
    net = {key: model[key] for key in ("hidden", "activation", "output", "center", "kind")}
    return {**net, "input_dim": input_dim, "dim_z": cfg.dim_z, "output": output or net["output"]}
