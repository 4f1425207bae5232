// uv_ticks: a Node program whose file system calls go through libuv (with
// UV_USE_IO_URING=1, through its io_uring): prints "ready", then N every 50 ms.
const fs = require('fs');
let n = 0;
console.log('ready');
setInterval(() => { fs.stat('/', () => { console.log(n++); }); }, 50);
