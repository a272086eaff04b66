"""Named transfer settings (``--preset``, ``--list-presets``): the published comparisons' recipes on a
GPU and minutes-long ones on a CPU."""

from __future__ import annotations

from ._entries import CATALOGUE_ALL

_WRN = dict(model="wrn-28-10", epochs=200, batch_size=128, lr=0.1, optimizer="sgd", weight_decay=5e-4,
            seeds=5, losses=list(CATALOGUE_ALL))
_WRN_NOTE = ("GPU. WRN-28-10, 200 epochs, batch 128, SGD-Nesterov lr 0.1, wd 5e-4, cosine: the usual "
             "WRN recipe (Zagoruyko & Komodakis); the transfer paper (arXiv 2404.06633) trains WRN-28-10 "
             "under each augmentation, its exact schedule is not in LOSSES.md.")


def _presets() -> dict[str, dict]:
    p: dict[str, dict] = {}
    for ds in ("cifar10", "cifar100"):
        for aug in ("flipcrop", "cutout", "mixup", "cutmix", "randaugment", "autoaugment"):
            # nlfs.data puts every technique other than "none" on top of the flip + crop baseline.
            p[f"{ds}-wrn28-10-{aug}"] = dict(_WRN, dataset=ds, augment=aug, note=_WRN_NOTE)
        p[f"{ds}-effnetv2s-finetune"] = dict(
            model="efficientnet_v2_s", dataset=ds, augment="randaugment", epochs=30, batch_size=128,
            optimizer="adamw", lr=1e-3, weight_decay=1e-2, dropout=0.2, seeds=6,
            losses=["CE", "Baikal", "NGL"],
            note="GPU. EfficientNetV2-S fine-tuning (RandAugment, AdamW). Needs --checkpoint PATH (a local "
                 "ImageNet state dict; nothing is downloaded). The paper's datasets (Stanford Cars, "
                 "Oxford Flowers, Caltech) are not in nlfs.data, so CIFAR stands in; final tests there use "
                 "6 runs per setting against CE and Baikal.")
        p[f"{ds}-ngl-resnet18"] = dict(
            model="resnet18", dataset=ds, augment="flipcrop", epochs=100, batch_size=128, optimizer="sgd",
            lr=0.1, weight_decay=5e-4, seeds=5, losses=["CE", "NGL", "Focal", "SCE"],
            note="GPU. The NGL paper's comparison (CE, NGL, Focal, SCE) on a dataset it used that "
                 "torchvision has; its Inception network is not in nlfs.models, ResNet-18 stands in.")
    p["fashion-mnist-ngl-resnet18"] = dict(
        p["cifar10-ngl-resnet18"], dataset="fashion-mnist", augment="flipcrop", epochs=50,
        note="GPU. The NGL paper's Fashion-MNIST comparison (published CE 94.0, NGL +0.07) with ResNet-18 "
             "instead of its Inception network.")
    p["fashion-mnist-cpu"] = dict(
        model="surrogate", dataset="fashion-mnist", augment="none", epochs=2, train_size=8000, val_size=2000,
        seeds=5, losses=list(CATALOGUE_ALL), threads=1,
        note="CPU, minutes: the surrogate CNN, 8,000 training images, 2 epochs (124 steps at batch 128); "
             "8 losses x 5 seeds (run times: bench/results/transfer_fashion_mnist_cpu.md).")
    p["fashion-mnist-resnet-cpu"] = dict(
        model="resnet9v2", dataset="fashion-mnist", augment="none", epochs=2, train_size=8000,
        val_size=2000, seeds=5, losses=["CE", "NGL", "Baikal", "Focal", "Poly1"], threads=1,
        note="CPU, minutes: the small pre-activation ResNet (ResNet9V2, dropout 0.5) on 8,000 "
             "Fashion-MNIST images for 2 epochs; 5 losses x 5 seeds.")
    p["digits-smoke"] = dict(model="surrogate", dataset="digits", augment="none", epochs=2, seeds=2,
                             losses=["CE", "NGL"], note="CPU, seconds: a smoke test on sklearn digits.")
    return p


PRESETS: dict[str, dict] = _presets()
