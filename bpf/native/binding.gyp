{
  "targets": [
    {
      "target_name": "meshid_bpf",
      "sources": ["meshid_bpf.c"],
      "libraries": ["-lbpf"],
      "cflags": ["-Wall", "-Wextra", "-Wno-unused-parameter", "-O2"]
    }
  ]
}
