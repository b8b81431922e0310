"""The ResNet trunks Cutie uses: a pixel encoder (stages up to layer3) and the mask encoder
(5 input channels: RGB, the object's mask, the other objects' mask). Key names follow
torchvision's, which the official checkpoints use."""

from __future__ import annotations

import math

import torch.nn as nn


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        out += identity  # in place, as the official (torchvision) block: no new activation-sized tensor
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)  # stride on the 3x3 conv, as torchvision v1.5
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        out += identity  # in place, as the official (torchvision) block
        return self.relu(out)


_DEPTHS = {"resnet18": (BasicBlock, (2, 2, 2)), "resnet50": (Bottleneck, (3, 4, 6))}


def _make_stage(block, cin: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    downsample = None
    if stride != 1 or cin != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(cin, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion),
        )
    layers = [block(cin, planes, stride, downsample)]
    cin = planes * block.expansion
    layers += [block(cin, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers), cin


def _init_resnet(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNetStem(nn.Module):
    """conv1 / bn1 / three stages (strides 4, 8, 16) of a ResNet; layer4 is never used.
    `first_stage_name` is `res2` in Cutie's pixel encoder and `layer1` in its mask encoder."""

    def __init__(self, arch: str, in_channels: int = 3, first_stage_name: str = "layer1",
                 relu_after_pool: bool = False):
        super().__init__()
        block, depths = _DEPTHS[arch]
        self.first_stage_name = first_stage_name
        # The mask encoder applies maxpool before relu (official order; the result is the same
        # because max and relu commute, but we keep the order for exact parity of graphs).
        self.relu_after_pool = relu_after_pool
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stage1, cin = _make_stage(block, 64, 64, depths[0], 1)
        self.add_module(first_stage_name, stage1)
        self.layer2, cin = _make_stage(block, cin, 128, depths[1], 2)
        self.layer3, cin = _make_stage(block, cin, 256, depths[2], 2)
        self.out_channels = (cin, cin // 2, cin // 4)
        _init_resnet(self)

    def forward(self, x):
        x = self.bn1(self.conv1(x))
        x = self.relu(self.maxpool(x)) if self.relu_after_pool else self.maxpool(self.relu(x))
        f4 = getattr(self, self.first_stage_name)(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f16, f8, f4
