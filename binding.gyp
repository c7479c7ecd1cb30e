# node-gyp entry of a checkout (npm run build:cpu, prebuildify): the build is native/zotune.gypi.
{
  "variables": {"zotune_root": "."},
  "includes": ["native/zotune.gypi"]
}
