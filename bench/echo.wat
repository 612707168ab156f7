;; The trivial module of the ceiling benchmark: honours the AO loader contract and answers every
;; message with the same small result, so that the pipeline's own costs dominate.
(module
  (memory (export "memory") 2)
  (global $sp (mut i32) (i32.const 65536))
  (data (i32.const 1024) "{\"ok\":true,\"response\":{\"Output\":\"echo\",\"Messages\":[],\"Spawns\":[],\"Assignments\":[]}}\00")
  (func (export "emscripten_stack_get_current") (result i32) (global.get $sp))
  (func (export "_emscripten_stack_alloc") (param $n i32) (result i32)
    (global.set $sp (i32.and (i32.sub (global.get $sp) (local.get $n)) (i32.const -16)))
    (global.get $sp))
  (func (export "_emscripten_stack_restore") (param $v i32) (global.set $sp (local.get $v)))
  (func (export "handle") (param $msg i32) (param $env i32) (result i32) (i32.const 1024)))
