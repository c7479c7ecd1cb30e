// Prints one source group of native/sources.json (argv[2]) as paths relative to the working
// directory: gyp runs this in the folder of the binding.gyp it builds and reads sources from there.
'use strict';
const path = require('path');
const group = require('./sources.json')[process.argv[2]];
if (!Array.isArray(group)) throw new Error(`native/sources.json has no source group '${process.argv[2]}'`);
const root = path.resolve(__dirname, '..');
console.log(group.map((f) => path.relative(process.cwd(), path.join(root, f))).join(' '));
