# node-gyp entry of an installed package's source build (`npx node-gyp rebuild -C <package>/native`,
# the remedy ZOTUNE_NO_BINARY names): the build is zotune.gypi.
{
  "variables": {"zotune_root": ".."},
  "includes": ["zotune.gypi"]
}
