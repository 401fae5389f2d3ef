"""Components that run in the CUDA image (training). A separate directory because `kfp component
build` builds one image per directory: `kfp component build components/gpu` builds the CUDA image."""
