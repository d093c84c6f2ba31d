{
  "targets": [
    {
      "target_name": "p256",
      "sources": ["p256.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
