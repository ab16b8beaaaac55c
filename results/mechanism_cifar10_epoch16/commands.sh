#!/bin/sh
# CIFAR-10 mechanism study: short binary CBP stages (4 "epochs" of 150 steps, p_max 1) from one FP32 checkpoint
cd /work/main
export MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 WANDB_MODE=offline OMP_NUM_THREADS=1
COMMON="experiment=stbp_cifar10_cpu logger=csv trainer.enable_progress_bar=false seed=1 quant=binary pretrained=logs/mech_cifar_start/fp32_snapshot.ckpt trainer.limit_train_batches=150 trainer.check_val_every_n_epoch=100 method.cbp.epochs=4 method.cbp.callback.p_max=1 method.cbp.callback.lr_drop_at_g=null method.cbp.callback.trace_every=10 data.datamodule.num_workers=0"
run() { name=$1; shift; [ -f logs/compare/mech_cifar/seed1/$name/summary.json ] && return; .venv/bin/python src/train.py $COMMON variant=$name "$@" hydra.run.dir=logs/compare/mech_cifar/seed1/$name > logs/mech_cifar_$name.log 2>&1; }
run adam_mlr1e-6 method.cbp.callback.constraint_step=coupled method.cbp.callback.multiplier_lr=1e-6
run adam_mlr1e-3 method.cbp.callback.constraint_step=coupled method.cbp.callback.multiplier_lr=1e-3
run decoupled_mlr1e-6 method.cbp.callback.multiplier_lr=1e-6
run decoupled_mlr1e-3 method.cbp.callback.multiplier_lr=1e-3
run decoupled_mlr1e-4 method.cbp.callback.multiplier_lr=1e-4
run sgd_mlr1e-3 method.cbp.callback.constraint_step=coupled method.cbp.optimizer._target_=torch.optim.SGD +method.cbp.optimizer.momentum=0.9 method.cbp.optimizer.lr=5e-3 method.cbp.callback.multiplier_lr=1e-3
